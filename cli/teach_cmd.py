from .errors import fail


def teach() -> None:
    """Not built yet.

    Example: hellopack teach
    """
    raise fail("teach is not built yet")
