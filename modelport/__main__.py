"""``python -m modelport`` is the ``modelport`` command."""

from modelport.cli.main import main

main()
