"""The fault suite's machinery (``bench/faults.py``): the world it builds, the child
processes it starts, the TCP proxy it cuts, and one scenario per fault."""
