from .errors import fail


def build() -> None:
    """Not built yet.

    Example: hellopack build
    """
    raise fail("build is not built yet")
