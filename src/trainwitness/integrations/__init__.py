"""Integrations with training frameworks: each turns the framework's own model and step into a ``TrainingSpec``
(what replay runs) and gives a hook that records the framework's loop. Each imports its framework, an optional extra."""
