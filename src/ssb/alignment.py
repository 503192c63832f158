"""Teacher and student views of one solution, as token ids that line up exactly.

The solution text is tokenized once and the end-of-turn token appended (the authors' code never
distils it, so their student never learns where to stop). The same ids follow the teacher prompt
(system + hinted prompt, generation prompt added) and the student prompt (system + bare question),
both rendered by the one ``ChatFormat``. For a prompt of length p, the logits at position p-1+j
predict solution token j; the model's input is prompt + solution[:-1], since nothing is predicted
after the last solution token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ssb.chat import ChatFormat
from ssb.data import DataError
from ssb.runfolder.artifacts import read_jsonl


class AlignmentError(DataError):
    """Teacher and student views that cannot be paired."""


@dataclass(frozen=True)
class AlignedExample:
    id: str
    teacher_prompt_ids: list[int]
    student_prompt_ids: list[int]
    solution_ids: list[int]  # solution tokens, end-of-turn last


def solution_token_ids(chat: ChatFormat, solution: str) -> list[int]:
    return chat.tokenizer(solution, add_special_tokens=False)["input_ids"] + [chat.end_of_turn_id]


def boxed_span(text: str) -> tuple[int, int] | None:
    """[start, end) of the last ``\\boxed{...}`` in ``text``, braces included; None when there is none or it is unclosed."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for i in range(start + len("\\boxed"), len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return start, i + 1
    return None


def answer_token_flags(chat: ChatFormat, solution_ids: list[int]) -> list[bool]:
    """Which solution tokens write the final boxed answer (for diagnostics; end-of-turn last, never one).

    Token offsets come from decoding token by token, so a character split across tokens may shift a
    flag by one token; good enough to see where a loss falls, not for training.
    """
    pieces = [chat.tokenizer.decode([token]) for token in solution_ids[:-1]]
    span = boxed_span("".join(pieces))
    flags, position = [], 0
    for piece in pieces:
        flags.append(span is not None and position < span[1] and position + len(piece) > span[0])
        position += len(piece)
    return flags + [False]


def _split(record: dict, where: str) -> tuple[list[dict], str]:
    roles = [m["role"] for m in record.get("messages", [])]
    if roles != ["system", "user", "assistant"]:
        raise AlignmentError(f"{where}: messages: expected roles system, user, assistant; got {roles}")
    return record["messages"][:2], record["messages"][2]["content"]


def align_examples(teacher_path: Path, student_path: Path, chat: ChatFormat) -> list[AlignedExample]:
    """Pair teacher and student records by id and tokenize them; refuses views that disagree."""
    students = {}
    for line, record in enumerate(read_jsonl(student_path), start=1):
        students[record["id"]] = (record, f"{student_path}:{line}")
    examples = []
    for line, record in enumerate(read_jsonl(teacher_path), start=1):
        where = f"{teacher_path}:{line}"
        if record["id"] not in students:
            raise AlignmentError(f"{where}: id: {record['id']!r} has no student example in {student_path}")
        student, student_where = students.pop(record["id"])
        teacher_prompt, solution = _split(record, where)
        student_prompt, student_solution = _split(student, student_where)
        if solution != student_solution:
            raise AlignmentError(f"{where}: messages[2]: the teacher's solution differs from the student's ({student_where})")
        solution_ids = solution_token_ids(chat, solution)
        examples.append(AlignedExample(record["id"], chat.prompt_ids(teacher_prompt), chat.prompt_ids(student_prompt), solution_ids))
    if students:
        raise AlignmentError(f"{student_path}: {len(students)} student example(s) without a teacher example, e.g. {next(iter(students))!r}")
    return examples


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # (B, S) right-padded prompt + solution[:-1]
    attention_mask: torch.Tensor  # (B, S)
    positions: torch.Tensor  # (N,) flat indices into B*S of the positions predicting solution tokens
    targets: torch.Tensor  # (N,) the solution token each of those positions predicts
    sequence_index: torch.Tensor  # (N,) which row each solution token belongs to


def pack(prompts: list[list[int]], solutions: list[list[int]], pad_id: int) -> PackedBatch:
    """Right-padded inputs and the flat gather indices of their solution-predicting positions."""
    inputs = [p + s[:-1] for p, s in zip(prompts, solutions)]
    width = max(len(x) for x in inputs)
    input_ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(inputs), width), dtype=torch.long)
    positions, targets, sequence_index = [], [], []
    for row, (x, p, s) in enumerate(zip(inputs, prompts, solutions)):
        input_ids[row, : len(x)] = torch.tensor(x)
        attention_mask[row, : len(x)] = 1
        positions.extend(row * width + len(p) - 1 + j for j in range(len(s)))
        targets.extend(s)
        sequence_index.extend([row] * len(s))
    as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return PackedBatch(input_ids, attention_mask, as_long(positions), as_long(targets), as_long(sequence_index))


def solution_hidden_states(model, batch: PackedBatch) -> torch.Tensor:
    """Final hidden states (after the last norm) at the solution-predicting positions. -> (N, H).

    Runs the decoder only: the (B, S, V) logits of a full forward are never built.
    """
    device = next(model.parameters()).device
    decoder = model.get_decoder()
    hidden = decoder(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1])[batch.positions.to(device)]
