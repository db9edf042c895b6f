"""Command front ends and orchestrators: the `vtp` command line (`commands.cli`), the train,
eval, show-batch and bench commands, `make demo` (`commands.demo`) and `vtp experiment`.

The top stage: it imports the stages below it (`evaluation`, `recipes`, `model`, `tools`,
`pipeline`) and nothing imports it.
"""
