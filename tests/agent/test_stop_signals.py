"""SIGTERM/SIGINT stop the agent, the demo and the simulator: agent/stop_signals.py.

The scripts run in a process of their own, under a timeout: a signal handler that deadlocks
hangs that process, and the test fails with the script's output instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from agent.stop_signals import stop_on_signals

ROOT = Path(__file__).resolve().parents[2]
HANG_S = 60


def run_script(body: str) -> str:
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(body)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=HANG_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process hung for {HANG_S} s (a deadlock in the signal handler?): {exc.stdout!r}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_signal_landing_while_the_main_thread_is_inside_event_wait_still_sets_stop() -> None:
    # Event.wait() holds its Condition's lock for a moment on every call; the script holds it
    # the same way when the signal's handler runs. A handler calling Event.set() itself would
    # block on that lock in the thread holding it, forever (the demo's CI hang).
    out = run_script(
        """
        import os, signal, threading
        from agent.stop_signals import stop_on_signals
        stop = threading.Event()
        with stop_on_signals(stop):
            with stop._cond:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000):  # bytecodes: Python runs the handler in here
                    pass
                print("set while held:", stop.is_set())
            print("set after:", stop.wait(10))
        """
    )
    assert out.splitlines() == ["set while held: False", "set after: True"]


def test_hundreds_of_signals_at_random_moments_beside_a_busy_thread_each_end_the_wait() -> None:
    # What the demo meets: the main thread waiting on `stop` in a loop while other threads
    # (the server, the writer) hold the GIL and pause it at any bytecode, the lock's included.
    out = run_script(
        """
        import os, random, signal, threading, time
        from agent.stop_signals import stop_on_signals

        def busy():
            while True:
                sum(range(1000))

        threading.Thread(target=busy, daemon=True).start()
        rounds = 0
        for _ in range(300):
            stop = threading.Event()
            with stop_on_signals(stop):
                def send():
                    time.sleep(random.random() * 0.005)
                    os.kill(os.getpid(), random.choice([signal.SIGTERM, signal.SIGINT]))
                sender = threading.Thread(target=send)
                sender.start()
                while not stop.wait(0.0001):
                    pass
                sender.join()
            rounds += 1
        print(rounds)
        """
    )
    assert out.strip() == "300"


def test_on_signal_hears_which_signal_before_stop_is_set_and_the_previous_handlers_come_back() -> None:
    heard: list[tuple[signal.Signals, bool]] = []
    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signals(stop, on_signal=lambda sig: heard.append((sig, stop.is_set()))):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(10)
    assert heard == [(signal.SIGTERM, False)]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_failing_on_signal_does_not_keep_stop_from_being_set() -> None:
    def broken(_sig: signal.Signals) -> None:
        raise RuntimeError("a report that fails")

    stop = threading.Event()
    with stop_on_signals(stop, on_signal=broken):
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(10)


def test_outside_the_main_thread_nothing_is_installed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def inside() -> None:
        with stop_on_signals(threading.Event()):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=inside)
    thread.start()
    thread.join()
    assert seen == [before]
