"""tiny-flow, laid out as LeRobot lays out a policy: ``configuration`` (its typed settings, loaded by the
config without torch) and ``modeling`` (the torch model: weights, loss, construction). Its perception and
generation halves are SmolVLA's (:mod:`auras.policies.smolvla`): tiny-flow is a small SmolVLA."""
