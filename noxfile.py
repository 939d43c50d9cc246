"""Every check of the project, one session each: ``nox`` runs the default set."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "fuzz", "lint", "types", "docs"]
nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# Hypothesis tests: 100 examples each in every `tests` session, 2,000 in `fuzz`.
PROPERTY_TESTS = [
    "tests/test_fuzz.py",
    "tests/test_security.py::test_no_id_leaves_the_run_endpoint",
    "tests/test_sse.py",
    "tests/test_policy.py",
]
# Every code example of the docs, each in a fresh interpreter: once per CI run, in `docs`.
DOCS_EXAMPLES = "tests/test_docs.py"
# Slow checks whose subject does not change with the Python version: once per CI run, in `fuzz`.
ONCE = [
    "tests/test_benchmarks.py",  # the benchmark scripts still run (a quick pass)
    "tests/test_reliability.py::test_fault_matrix",  # both budgets: 7 s of fault injection
    # The CLI's messages after real retries (a second each).
    "tests/test_cli.py::test_refused_connection_names_where_the_base_url_came_from",
    "tests/test_cli.py::test_verbose_shows_retries",
    # Waits 2 s, by design, for the blocked-loop guard to answer.
    "tests/test_plugin.py::test_testclient_against_fake_dify_fails_fast_naming_the_cause",
]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite with branch coverage (at least 95 %)."""
    session.install("-e", ".[tests]")
    session.env["COVERAGE_FILE"] = f".coverage.{session.python}"
    session.run("coverage", "erase")
    options = session.posargs or [
        "--numprocesses=2",  # the CI machine's two cores
        f"--ignore={DOCS_EXAMPLES}",
        *(f"--deselect={test}" for test in ONCE),
    ]
    session.run("coverage", "run", "-m", "pytest", *options)
    session.run("coverage", "combine")
    session.run("coverage", "report")


@nox.session(python="3.11")
def fuzz(session: nox.Session) -> None:
    """Run every property test with 2,000 examples each, and the ONCE tests: once per CI run."""
    session.install("-e", ".[tests]")
    session.env["DIFY_RUNS_FUZZ"] = "ci"
    session.run("pytest", "-q", "--timeout=600", *PROPERTY_TESTS, *session.posargs)
    session.run("pytest", "-q", *ONCE)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def types(session: nox.Session) -> None:
    """Type-check the package and the public-API usage file with mypy --strict."""
    session.install("-e", ".[tests]", "mypy>=1.13")
    session.run("mypy")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors, running its examples."""
    session.install("-e", ".[tests]", "-r", "docs/requirements.txt")
    session.run("python", "docs/make_figures.py")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "doctest", "docs", "docs/_build/doctest"
    )
    session.run("pytest", "-q", DOCS_EXAMPLES)


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Run the demo against the embedded simulator."""
    session.install(".")
    session.run("dify-runs", "demo", *session.posargs)


@nox.session(python="3.11", default=False)
def bench(session: nox.Session) -> None:
    """Run the benchmarks and write docs/performance.md and benchmarks/results.json."""
    # [testing]: looptime, for the benchmarks that run on virtual time.
    session.install("-e", ".[testing]", "-r", "benchmarks/requirements.txt")
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session(python="3.11", default=False)
def mutation(session: nox.Session) -> None:
    """Mutate the pure modules, run their tests, and write the score to docs/mutation.md."""
    session.install("-e", ".[tests]")
    session.run("python", ".ci/mutation.py", *session.posargs)


@nox.session(python="3.11", default=False)
def reliability(session: nox.Session) -> None:
    """Run the reliability tests and write docs/reliability.md (`-- long` fuzzes 50,000 each)."""
    session.install("-e", ".[tests]")
    session.env["DIFY_RUNS_FUZZ"] = session.posargs[0] if session.posargs else "ci"
    session.env["DIFY_RUNS_RELIABILITY_JSON"] = "benchmarks/reliability.json"
    session.run(
        "pytest",
        "-q",
        "--timeout=3600",  # `-- long` draws 50,000 examples per fuzz test
        "tests/test_reliability.py",
        "tests/test_fuzz.py",
        "tests/test_security.py",
    )
    session.run("python", "-m", "benchmarks.reliability_report")


@nox.session(python="3.11", default=False)
def generate(session: nox.Session) -> None:
    """Write dify_runs/_sync.py (SyncDifyClient) from DifyClient (`-- --check`: is it stale?)."""
    session.install("-e", ".", "ruff>=0.8")
    session.run("python", ".ci/generate_sync.py", *session.posargs)
