"""The command line: one module per subcommand, the only room that parses arguments
(``orchestrate run|study|report|ui|validate|ls|collect|bench|env``). The entry point is
:func:`orchestrator.cli.app.main`."""
