"""The Faust application: thin glue around `features/`."""


def __getattr__(name):  # lazy: importing streams must not import Faust
    if name == "ProfileUpdatePipeline":
        from streams.seed_pipeline import ProfileUpdatePipeline
        return ProfileUpdatePipeline
    raise AttributeError(name)
