"""CurriculumPromptDataset against OpenRLHF's real PromptDataset, DeepSpeed strategy dataloader and reward executor."""

from __future__ import annotations

import asyncio

import pytest
from conftest import ROWS, TOTAL_STEPS, base_flags, parse_openrlhf

from rtpo_data import Curriculum
from rtpo_data.adapters.openrlhf import REWARD_FILE, CurriculumPromptDataset

pytestmark = pytest.mark.openrlhf


@pytest.fixture(scope="module")
def strategy(tiny):
    from openrlhf.utils import get_strategy

    return get_strategy(parse_openrlhf(base_flags(tiny)))


def test_item_contract_is_prompt_datasets(tiny, strategy):
    """Same item tuple and collate output as OpenRLHF's PromptDataset, which the sample generator unpacks."""
    import datasets
    from openrlhf.datasets import PromptDataset
    from transformers import AutoTokenizer

    cur = Curriculum.open(tiny["cur"])
    tokenizer = AutoTokenizer.from_pretrained(tiny["model"])
    theirs = PromptDataset(datasets.Dataset.from_dict({"input": cur.render([0, 1], None)}), tokenizer, strategy)
    ours = CurriculumPromptDataset(cur)
    a, b = theirs[1], ours[1]
    assert len(a) == len(b) == 4
    assert (a[0], a[3]) == (b[0], b[3]) == ("default", None)
    assert a[1] == cur.render([1], None)[0]  # --data.apply_chat_template off: text goes through as is
    assert b[1] == cur.render([1], 0)[0]
    collated_theirs = theirs.collate_fn([theirs[0], theirs[1]])
    collated_ours = ours.collate_fn([ours[0], ours[1]])
    assert [type(x) for x in collated_ours] == [type(x) for x in collated_theirs] == [list] * 4
    assert all(len(x) == 2 for x in collated_ours)


def test_hints_shrink_step_by_step_as_the_curriculum_says(tiny):
    cur = Curriculum.open(tiny["cur"])
    ds = CurriculumPromptDataset(cur)
    assert len(ds) == ROWS and ds.total_steps == TOTAL_STEPS
    for row in range(ROWS):
        kept = []
        for step in range(TOTAL_STEPS + 3):
            ds.set_step(step)
            source, prompt, label, images = ds[row]
            stage = cur.stage_at(step)
            assert (source, images) == ("default", None)
            assert prompt == cur.render([row], stage)[0]
            assert label == {"answer": cur.answer(row), "row_id": cur.row_id(row), "index": row, "step": step, "stage": stage,
                             "kept_fraction": pytest.approx(cur.cut(row, stage)[0] / cur.trace_tokens([row])[0])}
            kept.append(label["kept_fraction"])
        assert kept[0] == 1.0 and kept == sorted(kept, reverse=True) and len(set(kept)) > 2
        # from the horizon on: no hint at all, and never an index past the cut table
        assert prompt == cur.render([row], None)[0] and kept[-1] == 0.0


def test_eval_dataset_never_shows_a_hint(tiny):
    cur = Curriculum.open(tiny["cur"])
    ds = CurriculumPromptDataset(cur, hint=False)
    ds.set_step(0)
    assert [ds[i][1] for i in range(ROWS)] == cur.render(range(ROWS), None)
    assert ds[5][2] == {"answer": cur.answer(5), "row_id": cur.row_id(5), "kept_fraction": 0.0}


def test_max_samples_keeps_the_first_rows(tiny):
    ds = CurriculumPromptDataset(tiny["cur"], max_samples=5)
    assert len(ds) == 5
    with pytest.raises(IndexError):
        ds[5]


def test_openrlhf_dataloader_renders_when_a_row_is_fetched(tiny, strategy):
    """OpenRLHF's own dataloader (shuffled, num_workers=0): a row drawn after the step moves gets the new step."""
    cur = Curriculum.open(tiny["cur"])
    ds = CurriculumPromptDataset(cur)
    loader = strategy.setup_dataloader(ds, 1, True, True, ds.collate_fn, num_workers=0)
    from openrlhf.trainer.ppo_utils.samples_generator import _collect_prompt_batch

    it = iter(loader)
    drawn = {0: _collect_prompt_batch(it, 3)}
    ds.set_step(2)
    drawn[2] = _collect_prompt_batch(it, 3)
    for step, (prompts, labels, images, exhausted) in drawn.items():
        assert len(prompts) == len(labels) == 3 and images == [None] * 3 and not exhausted
        for prompt, label in zip(prompts, labels):
            row = int(label["row_id"][1:])
            assert label["step"] == step
            assert prompt == cur.render([row], cur.stage_at(step))[0]


def test_openrlhf_dataloader_state_resumes_the_same_rows(tiny, strategy):
    """What OpenRLHF saves in its checkpoint (data_loader_state_dict) continues the shuffled order."""
    ds = CurriculumPromptDataset(tiny["cur"])
    loader = strategy.setup_dataloader(ds, 1, True, True, ds.collate_fn, num_workers=0)
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    rest = [next(it)[2][0]["row_id"] for _ in range(ROWS - 5)]
    resumed = strategy.setup_dataloader(ds, 1, True, True, ds.collate_fn, num_workers=0)
    resumed.load_state_dict(state)
    assert [b[2][0]["row_id"] for b in resumed] == rest


def test_reward_file_runs_in_openrlhfs_executor(tiny):
    """--reward.remote_url with rtpo-data's file: OpenRLHF's SingleTurnAgentExecutor loads it by path and
    calls reward_func(queries, prompts, labels) with the dataset's dict label."""
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    cur = Curriculum.open(tiny["cur"])
    ds = CurriculumPromptDataset(cur)
    _, prompt, label, _ = ds[3]
    executor = SingleTurnAgentExecutor([REWARD_FILE])
    assert executor.reward_func is not None

    async def rewards():
        return await asyncio.gather(
            executor._fetch_rewards_via_func([prompt + " so \\boxed{6}."], [prompt], [label]),
            executor._fetch_rewards_via_func([prompt + " so \\boxed{7}."], [prompt], [label]),
        )

    right, wrong = asyncio.run(rewards())
    assert right[0]["rewards"].tolist() == [1.0] and wrong[0]["rewards"].tolist() == [0.0]
    assert right[0]["extra_logs"]["hint/kept_fraction"].item() == pytest.approx(1.0)
    assert right[0]["extra_logs"]["hint/step"].item() == 0.0


def test_openrlhfs_executor_sends_the_curriculum_ids_to_the_engine(tmp_path):
    """OpenRLHF's own SingleTurnAgentExecutor tokenizes each prompt with add_special_tokens=False. With a
    tokenizer that adds BOS and prefixes "▁" to the text's first word only (SentencePiece style, as Llama
    2 and Mistral), even BOS + prompt text tokenizes to other ids than the curriculum's; handed the
    dataset's prompt and the trainer's CurriculumTokenizer (through pickle, as Ray sends them), the
    engine gets the stored ids. The engine is a test double: vLLM cannot run on a CPU."""
    import pickle
    from types import SimpleNamespace

    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    from rtpo_data import BuildConfig, build
    from rtpo_data.adapters.openrlhf_prompt import CurriculumTokenizer

    from helpers import BOS_TEMPLATE, make_tokenizer, write_jsonl
    from trl_helpers import tiny_rows

    model = make_tokenizer(tmp_path / "model", vocab_size=400, bos=True, template=BOS_TEMPLATE, metaspace=True)
    src = write_jsonl(tmp_path / "rows.jsonl", tiny_rows(4))
    build(BuildConfig(source=str(src), out=str(tmp_path / "cur"), tokenizer=model, total_steps=4, stages=4, unit="word"))
    cur = Curriculum.open(tmp_path / "cur")
    tokenizer = AutoTokenizer.from_pretrained(model)
    ds = CurriculumPromptDataset(cur)

    class Engine:
        def __init__(self):
            self.ids = []

        async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
            self.ids.append(list(prompt_token_ids))
            return SimpleNamespace(outputs=[SimpleNamespace(token_ids=[tokenizer.eos_token_id], finish_reason="stop",
                                                            logprobs=None)])

    executor = SingleTurnAgentExecutor()
    for step in (0, 1, 3):
        ds.set_step(step)
        _, prompt, label, _ = ds[2]
        expected = cur.prompt_ids(2, cur.stage_at(step))
        assert tokenizer(prompt, add_special_tokens=False)["input_ids"] != expected  # the text alone is not enough
        prompt, wrapped = pickle.loads(pickle.dumps((prompt, CurriculumTokenizer(tokenizer))))
        engine = Engine()
        asyncio.run(executor.execute(prompt, label, SamplingParams(max_tokens=4, logprobs=None), 512, wrapped, engine))
        assert engine.ids == [expected] and expected[0] == tokenizer.bos_token_id
    # any other text still goes to the tokenizer itself
    assert wrapped("plain text", add_special_tokens=False)["input_ids"] == tokenizer("plain text", add_special_tokens=False)["input_ids"]
    assert wrapped.decode(expected) == tokenizer.decode(expected) and len(wrapped) == len(tokenizer)
