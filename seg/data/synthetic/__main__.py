"""``python -m seg.data.synthetic OUT ...``: see :func:`seg.data.synthetic.cli.main`."""

from seg.data.synthetic.cli import main

main()
