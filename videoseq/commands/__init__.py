"""One module per `videoseq` subcommand: `HELP`, `add_arguments(parser)`, `run(args) -> int`."""
