"""study.quiet: the libraries' log lines go to the study's log file, not the terminal."""
import logging

from study.quiet import LIBRARY_LOGGERS, library_logs, log_path


def test_library_records_go_to_the_file_only_and_the_loggers_are_restored(tmp_path, capsys):
    import optuna

    optuna.logging.get_logger("optuna")  # as the library sets itself up on first use
    path = log_path(tmp_path / "w", "demo")
    ray_logger = logging.getLogger("ray.tune.tune")
    before = [(logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in LIBRARY_LOGGERS]
    with library_logs(path):
        assert not path.exists()  # made on the first record: a run that fails first writes nothing
        ray_logger.info("Wrote the latest version of all result files")
        logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
        optuna.logging.get_logger("optuna").info("A new study created in memory")
        logging.getLogger("study.runner").warning("this project's own warning")  # not a library's
    captured = capsys.readouterr()
    text = path.read_text()
    for line in ("Wrote the latest version", "Creating initial MLflow", "A new study created"):
        assert line in text and line not in captured.out + captured.err
    assert "this project's own warning" not in text
    after = [(logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in LIBRARY_LOGGERS]
    assert after == before


def test_verbose_leaves_the_loggers_alone(tmp_path):
    path = log_path(tmp_path, "demo")
    with library_logs(path, enabled=False) as where:
        logging.getLogger("ray").warning("shown as Ray shows it")
    assert where is None and not path.exists()


def test_a_library_logger_without_handlers_still_writes_to_the_file(tmp_path, capsys):
    """`ray.init` clears the `ray` logger's handlers: its records reach Python's last resort,
    which sends a library's to the file and anyone else's to stderr as before; `reattach` puts
    the file handler back."""
    from study.quiet import reattach

    path = log_path(tmp_path, "demo")
    with library_logs(path):
        logging.getLogger("ray").handlers = []  # as ray.init leaves it
        logging.getLogger("ray._private.worker").info("Started a local Ray instance.")
        logging.getLogger("study.x").warning("a project warning")
        reattach()
        assert logging.getLogger("ray").handlers and not logging.getLogger("ray").propagate
        logging.getLogger("ray.tune").info("after reattach")
    text = path.read_text()
    assert "Started a local Ray instance." in text and "after reattach" in text
    assert "a project warning" not in text  # this project's own: on the console as before
