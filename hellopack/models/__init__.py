"""Models: the open_clip base (``base``), LoRA (``lora``), the projector (``projector``),
students (``students``) and weak teachers (``teachers``). Import the submodules directly;
this package imports nothing heavy itself."""
