"""The ``rtpo-data`` command line (``rtpo_data.cli.main:app``), a thin shell over the library."""
