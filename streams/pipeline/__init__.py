"""The profile pipeline on a Faust app (streams.pipeline.profile_pipeline.ProfilePipeline)."""


def __getattr__(name):  # lazy: the pipeline's pure parts import without Faust's app
    if name == "ProfilePipeline":
        from streams.pipeline.profile_pipeline import ProfilePipeline
        return ProfilePipeline
    raise AttributeError(name)
