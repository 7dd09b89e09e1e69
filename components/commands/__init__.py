"""``solarpipe`` subcommands: each module adds its arguments and a handler to a subparser."""
