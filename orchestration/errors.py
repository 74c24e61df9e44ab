"""The settings error, in a module of its own so that code which only catches it (the `logloop`
command's entry point) need not import the settings models, and with them pydantic."""


class LoopSettingsError(ValueError):
    """The loop settings (config/loop.yaml and the LOGLOOP_ variables) are invalid: one line naming
    the setting and the reason."""
