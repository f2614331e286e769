"""One raw row (alpaca | sharegpt | openai, LLaMA-Factory's conventions) -> CanonicalSample.

Converters only reshape: they raise `SampleError` when a row cannot be read at all (missing column, wrong type,
unknown role). Whether the result makes sense (roles alternate, placeholders match images, boxes inside images)
is `validate`'s job, so that both kinds of problem are reported the same way.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from .registry import DatasetAttr
from .sample import IMAGE_PLACEHOLDER, CanonicalSample, SampleError, parse_privileged

Conversation = list[dict[str, str]]
Converter = Callable[[dict[str, Any], DatasetAttr], tuple[Conversation, list[Any]]]
CONVERTERS: dict[str, Converter] = {}


def register_converter(name: str) -> Callable[[Converter], Converter]:
    def wrap(fn: Converter) -> Converter:
        CONVERTERS[name] = fn
        return fn

    return wrap


def _text(row: dict[str, Any], column: str, required: bool = True) -> Optional[str]:
    if column not in row or row[column] is None:
        if required:
            raise SampleError(column, "missing")
        return None
    value = row[column]
    if not isinstance(value, str):
        raise SampleError(column, f"expected text, got {type(value).__name__}")
    return value


def _system(row: dict[str, Any], attr: DatasetAttr) -> Conversation:
    column = attr.columns.get("system")
    system = _text(row, column, required=False) if column else None
    return [{"role": "system", "content": system}] if system else []


def _images(row: dict[str, Any], attr: DatasetAttr) -> list[Any]:
    column = attr.columns.get("images")
    if not column:
        return []
    value = row.get(column)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@register_converter("alpaca")
def convert_alpaca(row: dict[str, Any], attr: DatasetAttr) -> tuple[Conversation, list[Any]]:
    """instruction (+ "\\n" + input) as the user turn, output as the answer, `history` as [[query, answer], ...]."""
    cols = attr.columns
    messages = _system(row, attr)
    history_col = cols.get("history")
    history = row.get(history_col) if history_col else None
    for i, pair in enumerate(history or []):
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(x, str) for x in pair)):
            raise SampleError(f"{history_col}[{i}]", "expected [query, answer] (two texts)")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    parts = [_text(row, cols["prompt"])]
    query = _text(row, cols["query"], required=False) if cols.get("query") else None
    if query:
        parts.append(query)
    messages.append({"role": "user", "content": "\n".join(p for p in parts if p)})
    response = _text(row, cols["response"], required=False) if cols.get("response") else None
    if response:
        messages.append({"role": "assistant", "content": response})
    return messages, _images(row, attr)


def _role_map(attr: DatasetAttr) -> dict[str, str]:
    tags = attr.tags
    return {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["system_tag"]: "system"}


def _turns(row: dict[str, Any], attr: DatasetAttr) -> list[Any]:
    column = attr.columns["messages"]
    turns = row.get(column)
    if turns is None:
        raise SampleError(column, "missing")
    if not isinstance(turns, list):
        raise SampleError(column, f"expected a list of turns, got {type(turns).__name__}")
    return turns


def _role(turn: dict[str, Any], attr: DatasetAttr, roles: dict[str, str], where: str) -> str:
    tag = turn.get(attr.tags["role_tag"])
    if tag in roles:
        return roles[tag]
    if tag in (attr.tags.get("observation_tag"), attr.tags.get("function_tag")):
        raise SampleError(f"{where}.{attr.tags['role_tag']}", f"tool-call turns (`{tag}`) are not supported",
                          kind="roles")
    raise SampleError(f"{where}.{attr.tags['role_tag']}",
                      f"unknown role {tag!r} (expected one of {', '.join(map(repr, roles))})", kind="roles")


@register_converter("sharegpt")
def convert_sharegpt(row: dict[str, Any], attr: DatasetAttr) -> tuple[Conversation, list[Any]]:
    column, content_tag = attr.columns["messages"], attr.tags["content_tag"]
    roles = _role_map(attr)
    messages = _system(row, attr)
    for i, turn in enumerate(_turns(row, attr)):
        where = f"{column}[{i}]"
        if not isinstance(turn, dict):
            raise SampleError(where, "expected an object with role and content")
        role = _role(turn, attr, roles, where)
        content = turn.get(content_tag)
        if not isinstance(content, str):
            raise SampleError(f"{where}.{content_tag}", f"expected text, got {type(content).__name__}")
        messages.append({"role": role, "content": content})
    check_alternation([m["role"] for m in messages], column, offset=len(messages) - len(_turns(row, attr)))
    return messages, _images(row, attr)


def check_alternation(roles: list[str], column: str, offset: int = 0) -> None:
    """An optional system turn first, then user and assistant alternating, starting with the user.
    `offset`: how many leading turns came from elsewhere (a `system` column), to name the raw turn index."""
    start = 1 if roles and roles[0] == "system" else 0
    if len(roles) == start:
        raise SampleError(column, "no user turn", kind="roles")
    for i in range(start, len(roles)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if roles[i] != expected:
            raise SampleError(f"{column}[{i - offset}]", f"expected a {expected} turn, got {roles[i]} "
                              "(turns must alternate user/assistant after an optional first system turn)",
                              kind="roles")


def _openai_content(content: Any, where: str, images: list[Any]) -> str:
    """Text, or OpenAI content parts: text parts joined, image parts replaced by `<image>` (paths collected)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise SampleError(where, f"expected text or a list of content parts, got {type(content).__name__}")
    text = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            text.append(part["text"])
        elif kind in ("image", "image_url"):
            value = part.get(kind)
            url = value.get("url") if isinstance(value, dict) else value
            if not isinstance(url, str):
                raise SampleError(f"{where}[{j}].{kind}", "expected an image path or {\"url\": path}")
            images.append(url)
            text.append(IMAGE_PLACEHOLDER)
        else:
            raise SampleError(f"{where}[{j}]", "expected a {\"type\": \"text\"|\"image_url\"|\"image\"} part")
    return "".join(text)


@register_converter("openai")
def convert_openai(row: dict[str, Any], attr: DatasetAttr) -> tuple[Conversation, list[Any]]:
    column, content_tag = attr.columns["messages"], attr.tags["content_tag"]
    roles = _role_map(attr)
    messages = _system(row, attr)
    part_images: list[Any] = []
    for i, turn in enumerate(_turns(row, attr)):
        where = f"{column}[{i}]"
        if not isinstance(turn, dict):
            raise SampleError(where, "expected an object with role and content")
        role = _role(turn, attr, roles, where)
        if turn.get("tool_calls"):
            raise SampleError(f"{where}.tool_calls", "tool calls are not supported", kind="roles")
        messages.append({"role": role, "content": _openai_content(turn.get(content_tag), f"{where}.{content_tag}",
                                                                  part_images)})
    check_alternation([m["role"] for m in messages], column, offset=len(messages) - len(_turns(row, attr)))
    column_images = _images(row, attr)
    if part_images and column_images:
        raise SampleError(attr.columns["images"], "images are given both in content parts and in this column")
    return messages, part_images or column_images


def resolve_image(value: Any, media_dir: str, where: str) -> str:
    """An image entry (a path or {"path": ...}) -> absolute path; relative paths resolve against `media_dir`."""
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        value = value["path"]
    if not isinstance(value, str) or not value:
        raise SampleError(where, f"expected an image path, got {type(value).__name__}", kind="image")
    if "://" in value:
        raise SampleError(where, f"remote images are not supported ({value}); download them and use paths",
                          kind="image")
    return os.path.normpath(value if os.path.isabs(value) else os.path.join(media_dir, value))


def to_canonical(row: Any, index: int, attr: DatasetAttr, source_file: str) -> CanonicalSample:
    """Convert row `index` of dataset `attr`; raises SampleError (with the field) when it cannot."""
    if not isinstance(row, dict):
        raise SampleError("<row>", f"expected an object, got {type(row).__name__}")
    conversation, raw_images = CONVERTERS[attr.formatting](row, attr)
    images_col = attr.columns.get("images", "images")
    images = [resolve_image(v, attr.media_dir, f"{images_col}[{i}]") for i, v in enumerate(raw_images)]
    priv_col = attr.columns.get("privileged")
    privileged = parse_privileged(row.get(priv_col), where=priv_col) if priv_col else parse_privileged(None)
    response = None
    if conversation and conversation[-1]["role"] == "assistant":
        response = conversation.pop()["content"]
    return CanonicalSample(
        uid=f"{attr.name}:{index}", dataset=attr.name, index=index, source_file=source_file,
        messages=conversation, response=response, images=images, privileged=privileged,
        privilege=list(attr.privilege),
    )
