"""Placeholder: replaced by the dev-swift launcher."""


def register(sub):  # pragma: no cover - placeholder
    pass
