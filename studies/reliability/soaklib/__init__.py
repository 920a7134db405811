"""Soak test of a resumable search (issue #10): kill a real ``autopeft search`` at random moments, resume it
with the same command each time, and check that nothing finished is ever lost, changed or trained twice.

One study directory, one command. The search is started as a subprocess and, N times, signalled at a
random moment (seeded; the seed is recorded): SIGKILL mostly, some Ctrl-C (SIGINT, which stops at the
next step boundary and saves), a few double Ctrl-C (the second one stops at once). After each kill the
same command is run again; after the last kill it is left to finish, and once more on the finished study.

Kill moments are spread over the phases of a search. Each kill has a target and a random delay; the
script watches the run's log and the study (read-only SQLite queries, every ~15 ms) and fires at the
target's k-th occurrence in that run (k random 1..3 for the search phases) plus the delay. Delays that
depend on the model are fractions of the phase's typical duration, learnt from the runs so far:

    startup         10-70% of the usual start-up (loading model and data, opening the study, recovering)
    sampling        0-30 ms after a trial was asked (plan being sampled and checked) or none runs (tell/ask)
    mid-rung        30-95% of a rung's training after a trial started, resumed, or was promoted
    between-rungs   0-80 ms after a rung metric was recorded (decision pending) or a promotion (the rung
                    checkpoint is written; the next rung starts)
    final-retrain   5-150% of a retraining into the final stage's first retraining of the run
    final-report    0-300 ms after the pick (test evaluation; front/, best/, summary.json being written)

Search-phase targets come first (shuffled), the final-stage ones last; when the search reaches its final
stage before a search-phase target was hit, the target becomes final-retrain. The phase *observed* at
the instant of the signal (from the study and the log, which can differ from the target) is recorded.

After every run (killed or not), from a copy of study.db (with its hot journal, so a kill mid-write
is rolled back exactly as the next run would):

- the database passes ``PRAGMA integrity_check``;
- every trial that had finished training before the run (state finished, user attr status complete or
  stopped) still has the same state, values, rung_metrics, seed and plan, and the same worker claim
  stamp (a retrained trial would be re-claimed); no such trial has a start line in the run's log;
- every final-stage retraining finished before the run (``trials/<n>/seed-<s>/metrics.json``) is
  neither started again nor rewritten;
- trials.csv has no duplicated trial number, and only numbers the study has; a trial number has at most
  one fresh (not "(resumed)") start line over all runs; trials trained or training <= --trials;
- exit codes: SIGKILL -9; Ctrl-C 130, or -2 (ended by the signal: during start-up, or the second Ctrl-C of
  a double one arriving after the first one's clean stop had restored Python's handler); after a single Ctrl-C no
  trial is left RUNNING and each "saved to continue: trial n at step s" matches the checkpoint on disk;
- the trials a kill interrupted are, after the resume, continued under their own number from the step of
  the checkpoint left on disk (``resumed_from_step``), their rung metrics recorded before the kill are
  unchanged (a resumed run is bitwise the uninterrupted one), or, if interrupted before training started,
  failed with that reason once found stale (how long that took is recorded: such a trial has no worker
  stamp yet, so autopeft.searching.liveness waits for its 120 s grace period).

At the end: exit 0, summary.json, trials.csv (= the study's trial numbers), pareto.csv (= the summary's
front), front/<n>/adapter.safetensors and K retraining values per front plan, best/ with plan.json,
adapter.safetensors, autopeft_config.json, metrics.json, an adapter for every complete trial, exactly
--trials trials trained, no trial left running, no trials/*/checkpoint.safetensors. A rerun of the
finished study trains nothing and leaves the report complete.

Every search process runs pinned to one CPU (so ``--workers 1`` resolves to one torch thread) with
OMP_NUM_THREADS=1. Everything found goes to results.json; ``violations`` must be 0.

The package, one job a module (``studies/reliability/soak.py`` is the entry point; ``python -m soaklib``
from this folder works too):

    search.py     the search under test: its command and the tiny offline assets
    scenarios.py  kill targets, delays, the seeded kill plan, when a kill is due, typical durations
    observe.py    a running search seen from outside: its log and the live study (read-only), the phase
    snapshot.py   the study after a run, from a copy of study.db taken with its hot journal
    checks.py     the invariants checked after each run and at the end
    runner.py     starting, signalling and resuming the search: the soak's loop and its state
    results.py    results.json: records, totals, violations and the machine
    machine.py    the CPU to pin the search to, and the machine record
    cli.py        the flags and ``main``

    .venv/bin/python studies/reliability/soak.py                         # tiny offline assets, ~3-5 min
    .venv/bin/python studies/reliability/soak.py --kills 30 --time-limit 1800 --seed 7
    .venv/bin/python studies/reliability/soak.py --real                  # minilm + rotten_tomatoes (~1 h)
"""
