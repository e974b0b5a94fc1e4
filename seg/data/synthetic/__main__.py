"""``python -m seg.data.synthetic OUT ...``: see :func:`seg.data.synthetic.main`."""

from seg.data.synthetic import main

main()
