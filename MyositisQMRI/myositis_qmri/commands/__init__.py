"""One module per subcommand: `add_arguments(parser)` and `main(args) -> int`.

Commands only parse arguments and wire stages together; algorithms live in the stages.
"""
