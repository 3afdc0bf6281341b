"""tiny-dp, laid out as LeRobot lays out a policy: ``configuration`` (its typed settings, loaded by the
config without torch), ``modeling`` (the torch model: weights, loss, construction) and ``adapter`` (the
perception and generation halves the runtime schedules)."""
