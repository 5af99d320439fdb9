from .errors import fail


def train() -> None:
    """Not built yet.

    Example: hellopack train
    """
    raise fail("train is not built yet")
