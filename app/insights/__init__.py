"""Answers built on the stored history (issue 16 §2-§4): pure rules, no database, no clock.

eras.py   the kernel era of a release and split_lock_mitigate, and whether misery mode is on
cost.py   the vCPU time a count of throttled traps costs at least (count x 10 ms)
fatal.py  which traps split_lock_detect=fatal would have answered with SIGBUS; a host's readiness

app/store/insights.py reads the tables and hands these functions values; app/api/insights.py
serves the answers.
"""
