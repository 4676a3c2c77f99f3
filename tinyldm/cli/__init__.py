"""The ``tinyldm`` command: its arguments (``parser``) and what each subcommand does (``main``)."""
