"""Model lifecycle tooling: the `insurance` command line (models, rollout, ab).

- ``lifecycle.repository``: bundles in a model repository, semver ordering, next version.
- ``lifecycle.validate``: the gate a bundle passes before it is registered, uploaded or rolled out.
- ``lifecycle.server``: MLServer's repository API (load, unload, hot swap of versions).
- ``lifecycle.rollout``: canary / promote / rollback as values changes of the Helm release.
- ``lifecycle.ab``: stable vs canary from Prometheus, with a verdict.

Run ``insurance --help`` (or ``python -m lifecycle --help``).
"""
