"""The command line: one module per subcommand, the only room that parses arguments
(``orchestrate run|study|validate|ls|ui|report|collect|bench|env``, each in the module of that
name). The entry point is :func:`orchestrator.cli.app.main`."""
