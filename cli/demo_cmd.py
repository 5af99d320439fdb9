from .errors import fail


def demo() -> None:
    """Not built yet.

    Example: hellopack demo
    """
    raise fail("demo is not built yet")
