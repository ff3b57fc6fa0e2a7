"""The contract the operator and the trainer share: spec and status models, exit codes, the exit summary,
metric names, condition reasons, ports and paths. Depends on pydantic and common-expression-language (CEL)
only."""
