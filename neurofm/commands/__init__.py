"""The ``neurofm`` commands: one module per command, each a ``run_<command>(cfg)`` that turns
the composed Hydra config into its typed dataclass once (:func:`neurofm.configs.schema.typed`),
calls the library with values, reports, and returns the exit code. Only this package and
:mod:`neurofm.configs` know Hydra; the library below never imports either."""
