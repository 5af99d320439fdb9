"""Class-incremental (GDumb) evaluation of an archive (`hellopack eval continual`)."""

from hellopack.continual.config import ContinualConfig, parse_labels
from hellopack.continual.run import continual

__all__ = ["ContinualConfig", "continual", "parse_labels"]
