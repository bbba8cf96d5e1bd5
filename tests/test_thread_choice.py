"""fit(threads="auto"): the thread count measured at the start, kept across a resume, and
measuring that leaves no trace in the result."""

from __future__ import annotations

import pytest
import torch

from textbatch import PaddingCollator, TextBatchError, TextDataset
from textbatch.batching.loaders import make_loader
from textbatch.models.classifiers import TextClassifier
from textbatch.training import loop
from textbatch.training import threads as thread_module
from textbatch.training.threads import (
    RECHECK_AFTER,
    USER_THREAD_VARIABLES,
    ThreadChoice,
    ThreadWatch,
    candidate_threads,
    choose_threads,
)

TIMING = ("seconds", "thread_seconds", "tokens_per_second")


class FakeMachine:
    """A pass that takes ``seconds[threads]`` on a clock that only passes do advance."""

    def __init__(self, seconds: dict[int, float], blips: dict[int, float] | None = None) -> None:
        self.seconds, self.threads, self.now, self.passes = seconds, max(seconds), 0.0, []
        self.blips = blips or {}  # pass number: extra seconds (another process, for a moment)

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def one_pass(self) -> None:
        self.now += self.seconds[self.threads] + self.blips.get(len(self.passes), 0.0)
        self.passes.append(self.threads)

    def choose(self) -> ThreadChoice:
        candidates = sorted(self.seconds, reverse=True)
        return choose_threads(self.one_pass, candidates, self.set_threads, clock=lambda: self.now)


@pytest.mark.parametrize(
    ("seconds", "chosen"),
    [
        ({2: 0.050, 1: 0.030}, 1),  # busy machine: one thread clearly faster
        ({2: 0.030, 1: 0.040}, 2),  # quiet machine: all threads faster
        ({2: 0.033, 1: 0.030}, 2),  # 1.1x is not clearly faster: keep all threads
        ({2: 0.002, 1: 0.0005}, 2),  # passes too short to be worth choosing for
        ({16: 0.10, 8: 0.04, 1: 0.20}, 8),
        ({16: 0.10, 8: 0.08, 1: 0.05}, 1),
    ],
)
def test_choose_threads_takes_fewer_only_when_clearly_faster(seconds, chosen):
    machine = FakeMachine(seconds)
    choice = machine.choose()
    assert choice.threads == chosen
    assert machine.threads == chosen  # left set
    assert choice.seconds == pytest.approx(seconds)


def test_choose_threads_stops_after_two_rounds_when_the_answer_is_clear():
    decisive = FakeMachine({2: 0.09, 1: 0.03})
    decisive.choose()
    assert decisive.passes == [1, 2, 1, 2, 1]  # warm-up, then two rounds
    close = FakeMachine({2: 0.03, 1: 0.04})
    close.choose()
    assert close.passes == [1, 2, 1, 2, 1, 2, 1]  # warm-up, then three rounds
    short = FakeMachine({2: 0.002, 1: 0.001})
    short.choose()
    assert short.passes == [1, 2, 1]  # too short to matter: one round


def test_one_slowed_pass_does_not_decide():
    # Quiet machine (2 threads faster), but the first timed 2-thread pass (pass 1, after the
    # warm-up) is slowed by a moment of load to 3x what one thread takes.
    machine = FakeMachine({2: 0.030, 1: 0.040}, blips={1: 0.090})
    choice = machine.choose()
    assert choice.threads == 2
    assert choice.seconds == pytest.approx({2: 0.030, 1: 0.040})


def test_candidate_threads():
    assert candidate_threads(1) == [1]
    assert candidate_threads(2) == [2, 1]
    assert candidate_threads(16) == [16, 8, 1]


def test_the_log_line_says_why_and_how_to_keep_all_threads():
    line = ThreadChoice(1, {2: 0.09, 1: 0.03}).describe(2)
    assert "threads: 1 of 2" in line and "3.0x" in line and "--threads 2" in line
    assert ThreadChoice(2, {2: 0.03, 1: 0.04}).describe(2) == "threads: 2"


def test_the_log_line_says_when_a_later_measurement_changes_the_count():
    back = ThreadChoice(2, {2: 0.03, 1: 0.06}).describe(2, previous=1)
    assert back == "threads: back to 2 from 1 (a training pass measured 30 ms with 2, 60 ms with 1)"
    assert "threads: 1 of 2, from 2" in ThreadChoice(1, {2: 0.09, 1: 0.03}).describe(2, 2)


def test_the_watch_measures_at_once_then_rarely():
    now = [100.0]
    watch = ThreadWatch(2, clock=lambda: now[0])
    assert watch.due()
    watch.measured(ThreadChoice(2, {2: 0.03, 1: 0.04}, measuring=0.2))
    now[0] += RECHECK_AFTER - 1
    assert not watch.due()
    now[0] += 1
    assert watch.due()
    watch.measured(ThreadChoice(1, {2: 0.3, 1: 0.1}, measuring=2.0))  # costly: 2% of the run
    now[0] += 99
    assert not watch.due()
    now[0] += 1
    assert watch.due()
    assert not ThreadWatch(2, clock=lambda: now[0]).later().due()  # a resumed run waits


# ---------------------------------------------------------------------- in fit


@pytest.fixture(scope="module")
def loader(tokenizer, corpus_records):
    train = TextDataset.from_records(corpus_records[:200], tokenizer, max_length=64)
    return make_loader(train, PaddingCollator.from_tokenizer(tokenizer), batch_size=32)


def _model(tokenizer):
    torch.manual_seed(0)  # dropout draws from torch's RNG: a probe must leave it as it was
    return TextClassifier(len(tokenizer), 8, dim=32, encoder="transformer", num_layers=1)


@pytest.fixture
def two_threads(monkeypatch):
    """torch at 2 threads, no OpenMP variable set: what "auto" measures on."""
    for name in USER_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _fit(model, loader, **options):
    history = loop.fit(model, loader, epochs=2, lr=3e-3, progress=False, log=False, **options)
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def test_measuring_leaves_no_trace_in_the_result(two_threads, monkeypatch, tokenizer, loader):
    calls = []

    def measured(one_pass, candidates, set_threads, **kwargs):
        calls.append(candidates)
        # the real measurement (every pass run), at 2 threads only, so that the result can be
        # compared with a run at threads=2
        return choose_threads(one_pass, [2, 2], set_threads, **kwargs)

    monkeypatch.setattr(loop, "choose_threads", measured)
    fixed = _model(tokenizer)
    expected = _fit(fixed, loader, threads=2)
    auto = _model(tokenizer)
    history = _fit(auto, loader, threads="auto")
    assert calls == [[2, 1]]  # measured once, at the run's first batch
    assert history == expected and history[0]["threads"] == 2
    for key, value in fixed.state_dict().items():
        assert torch.equal(value, auto.state_dict()[key]), key


def test_fit_trains_with_the_count_chosen_and_puts_torchs_back(
    two_threads, monkeypatch, tokenizer, loader
):
    monkeypatch.setattr(loop, "choose_threads", lambda *a, **k: _fixed_choice(1))
    seen = _record_steps(monkeypatch, lambda window: torch.get_num_threads())
    history = _fit(_model(tokenizer), loader, threads="auto")
    assert set(seen) == {1} and [r["threads"] for r in history] == [1, 1]
    assert torch.get_num_threads() == 2


def _record_steps(monkeypatch, what) -> list:
    """``what(window)`` at every optimizer step of the next fit, in a list."""
    seen, real_step = [], loop._Stepper.step

    def step(self, window, *args):
        seen.append(what(window))
        return real_step(self, window, *args)

    monkeypatch.setattr(loop._Stepper, "step", step)
    return seen


def _fixed_choice(threads: int) -> ThreadChoice:
    torch.set_num_threads(threads)
    return ThreadChoice(threads, {2: 0.09, 1: 0.03})


def test_a_resume_keeps_the_count_its_checkpoint_trained_with(
    two_threads, monkeypatch, tokenizer, loader, tmp_path
):
    expected = _fit(_model(tokenizer), loader, threads=1)
    _fit(_model(tokenizer), loader, threads=1, out_dir=tmp_path, stop_after_steps=9)

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run measured again")

    monkeypatch.setattr(loop, "choose_threads", refuse)
    resumed = _fit(_model(tokenizer), loader, threads="auto", out_dir=tmp_path, resume=True)
    assert resumed == expected and [r["threads"] for r in resumed] == [1, 1]


@pytest.mark.parametrize("variable", ["OMP_NUM_THREADS", "OMP_WAIT_POLICY"])
def test_the_users_environment_wins(two_threads, monkeypatch, tokenizer, loader, variable):
    monkeypatch.setenv(variable, "2" if variable == "OMP_NUM_THREADS" else "PASSIVE")
    monkeypatch.setattr(loop, "choose_threads", lambda *a, **k: pytest.fail("measured"))
    history = _fit(_model(tokenizer), loader, threads="auto")
    assert [r["threads"] for r in history] == [2, 2]


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "fast"])
def test_fit_refuses_a_bad_thread_count(tokenizer, loader, threads):
    with pytest.raises(TextBatchError, match=f"threads={threads!r}"):
        _fit(_model(tokenizer), loader, threads=threads)


def test_it_times_the_epochs_typical_batch_without_taking_it_from_the_loader(
    two_threads, monkeypatch, tokenizer, loader
):
    timed = []
    real_pass = loop._backward_pass

    def backward_pass(model, batch):
        timed.append(batch["input_ids"].shape)
        return real_pass(model, batch)

    monkeypatch.setattr(loop, "_backward_pass", backward_pass)
    monkeypatch.setattr(loop, "choose_threads", lambda one_pass, *a, **k: _choice_after(one_pass))
    trained = _record_steps(monkeypatch, lambda window: [b["input_ids"].shape for b in window])
    _fit(_model(tokenizer), loader, threads="auto")
    typical = loader.batch_sampler.typical_batch(epoch=0)
    expected = loader.collate_fn([loader.dataset[i] for i in typical])["input_ids"].shape
    assert timed == [expected]
    assert sum(map(len, trained)) == 2 * len(loader)  # every batch of both epochs, none taken


def _choice_after(one_pass) -> ThreadChoice:
    one_pass()
    return _fixed_choice(2)


def test_it_measures_again_and_follows_the_load(two_threads, monkeypatch, tokenizer, loader):
    monkeypatch.setattr(thread_module, "RECHECK_AFTER", 0.0)  # measure before every step
    answers = iter([1, 1, 2])  # busy at first, then quiet for good

    def choose(*args, **kwargs):
        return _fixed_choice(next(answers, 2))

    monkeypatch.setattr(loop, "choose_threads", choose)
    seen = _record_steps(monkeypatch, lambda window: torch.get_num_threads())
    history = _fit(_model(tokenizer), loader, threads="auto")
    assert seen[:3] == [1, 1, 2] and set(seen[3:]) == {2}
    assert [r["threads"] for r in history] == [2, 2]


def test_measuring_time_is_counted_apart_from_training_time(
    two_threads, monkeypatch, tokenizer, loader
):
    """The seconds spent measuring thread counts are in the epoch's ``seconds`` and in its own
    ``thread_seconds``, and left out of ``tokens_per_second``: a run measured on a large batch
    must not look slower than one measured on a tiny one (textbatch bench, textbatch demo)."""
    import time

    def slow_choice(*args, **kwargs):
        time.sleep(0.4)
        return _fixed_choice(2)

    monkeypatch.setattr(loop, "choose_threads", slow_choice)
    history = loop.fit(_model(tokenizer), loader, epochs=2, lr=3e-3, progress=False, log=False)
    first, second = history
    assert first["thread_seconds"] >= 0.4 and second["thread_seconds"] == 0.0
    assert first["seconds"] > first["thread_seconds"]
    for record in history:
        training = record["seconds"] - record["thread_seconds"]
        assert record["tokens_per_second"] == pytest.approx(record["real_tokens"] / training)
    assert "of it choosing threads" in loop._describe(first, 2)
    assert "choosing threads" not in loop._describe(second, 2)
