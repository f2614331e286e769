"""Annotator backends: a model loaded through our adapters (batched HF generation), or any OpenAI-compatible
chat-completions endpoint (`vllm serve`, SGLang, a hosted API) over plain HTTP (standard library only).

Both answer `ChatRequest`s (messages with `<image>` placeholders + image paths) with text, and both know the size an
image has when the annotator sees it (`view_size`), which absolute grounding conventions (Qwen2.5-VL) need to map
its pixel coordinates back to the original image.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from PIL import Image

from dopd.data.grounding import get_convention
from dopd.data.sample import IMAGE_PLACEHOLDER
from dopd.data.views import PromptView
from dopd.data.vision import image_size, open_rgb
from dopd.hparams import ConfigError

from .prompts import ChatRequest

if TYPE_CHECKING:
    from dopd.hparams import AnnotateArguments, ModelArguments

logger = logging.getLogger("dopd.annotate")

QWEN2_5_VL_FACTOR = 28  # patch 14 x spatial merge 2: the side multiple of a Qwen2.5-VL resized image
QWEN2_5_VL_MIN_PIXELS, QWEN2_5_VL_MAX_PIXELS = 56 * 56, 28 * 28 * 16384  # its preprocessor_config.json
RAW_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")  # sent as they are (no EXIF rotation to apply)
RETRY_STATUS = (408, 409, 425, 429)  # and every 5xx
FATAL_STATUS = (401, 403, 404)  # the configuration is wrong: every request would fail the same way


class RequestFailed(RuntimeError):
    """One request failed for good (after retries); the sample is rejected, the run goes on."""


class EndpointDown(RuntimeError):
    """The annotator cannot be used at all (unreachable endpoint, wrong key or model): the run stops."""


Answer = Union[str, Exception]


# ------------------------------------------------------------------------------------------------ OpenAI HTTP
class OpenAIBackend:
    """POST `{annotator_base_url}/chat/completions`, images as base64 data URLs, retries with exponential backoff.

    For an absolute grounding convention (`qwen2_5_vl`) each image is sent already resized the way the served
    processor would resize it (qwen-vl-utils `smart_resize` with `image_min_pixels`/`image_max_pixels`): the server
    then keeps it as it is, and the pixel coordinates it answers in are those of a size known here."""

    streaming = True  # requests are independent: run them concurrently, write each as it completes

    def __init__(self, args: AnnotateArguments, model_args: ModelArguments, grounding: Optional[str]) -> None:
        if not args.annotator_model:
            raise ConfigError("annotator_model is required: the model name the endpoint serves (see its /models)")
        self.args = args
        self.base_url = args.annotator_base_url.rstrip("/")
        self.grounding = grounding
        # unset: the bounds of the published Qwen2.5-VL processor, which is what `vllm serve` uses by default
        self.min_pixels = int(getattr(model_args, "image_min_pixels", None) or QWEN2_5_VL_MIN_PIXELS)
        self.max_pixels = int(getattr(model_args, "image_max_pixels", None) or QWEN2_5_VL_MAX_PIXELS)
        self.api_key = None
        self._lock = threading.Lock()  # qwen-vl-utils' guarded import and the size cache are not thread-safe
        self._sizes: dict[str, tuple[int, int]] = {}
        if args.annotator_api_key_env:
            self.api_key = os.environ.get(args.annotator_api_key_env)
            if not self.api_key:
                raise ConfigError(f"annotator_api_key_env: the environment variable `{args.annotator_api_key_env}` "
                                  "is not set (it must hold the API key; keys never go in config files)")

    # ------------------------------------------------------------------ sizes and images
    def _absolute(self) -> bool:
        return self.grounding is not None and not get_convention(self.grounding).relative

    def view_size(self, path: str) -> tuple[int, int]:
        """(width, height) of image `path` as the annotator sees it (thread-safe: requests run concurrently)."""
        with self._lock:
            if path not in self._sizes:
                w, h = image_size(path)
                if self._absolute():
                    # here, not at the top: it pulls torch and transformers (dopd.model.adapters), which the
                    # HTTP backend otherwise never needs
                    from dopd.model.adapters.qwen_vl.vision_utils import smart_resize

                    h, w = smart_resize(h, w, QWEN2_5_VL_FACTOR, self.min_pixels, self.max_pixels)
                self._sizes[path] = (int(w), int(h))
            return self._sizes[path]

    def data_url(self, path: str) -> str:
        """The image as a base64 data URL: the file's own bytes when it can go as it is, else a PNG of the image as
        displayed (EXIF orientation applied), resized to `view_size` for absolute conventions."""
        with Image.open(path) as image:
            fmt, orientation = image.format, image.getexif().get(0x0112, 1)
        if not self._absolute() and fmt in RAW_FORMATS and orientation in (None, 1):
            with open(path, "rb") as fh:
                data = fh.read()
            mime = Image.MIME.get(fmt, "image/png")
        else:
            image = open_rgb(path)
            if self._absolute():
                image = image.resize(self.view_size(path), Image.BICUBIC)
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            data, mime = buf.getvalue(), "image/png"
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        messages, images = [], iter(request.images)
        for message in request.messages:
            text = message["content"]
            if IMAGE_PLACEHOLDER not in text:
                messages.append({"role": message["role"], "content": text})
                continue
            parts: list[dict[str, Any]] = []
            for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
                if i > 0:
                    parts.append({"type": "image_url", "image_url": {"url": self.data_url(next(images))}})
                if chunk:
                    parts.append({"type": "text", "text": chunk})
            messages.append({"role": message["role"], "content": parts})
        body = {"model": self.args.annotator_model, "messages": messages,
                "max_tokens": self.args.annotator_max_new_tokens, "temperature": self.args.annotator_temperature}
        if self.grounding == "qwen2_vl":
            body["skip_special_tokens"] = False  # vLLM/SGLang extension: keep <|box_start|> & co. in the text
        return body

    # ------------------------------------------------------------------ HTTP
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def check(self) -> None:
        """Fail early, and clearly, when the endpoint cannot be reached at all (GET /models)."""
        url = f"{self.base_url}/models"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=self._headers()),
                                        timeout=min(10.0, self.args.annotator_timeout)):
                return
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise EndpointDown(f"annotator endpoint {self.base_url} refused the API key (HTTP {err.code}); "
                                   f"check annotator_api_key_env") from None
            return  # reachable; some servers have no /models
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise EndpointDown(f"annotator endpoint {self.base_url} is not reachable ({reason}); start the server "
                               "(e.g. `vllm serve MODEL`) or fix annotator_base_url") from None

    def _post(self, body: bytes) -> str:
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=self._headers(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=self.args.annotator_timeout) as response:
            raw = response.read()
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise RequestFailed(f"malformed chat-completions response: {raw[:200]!r}") from None
        if not isinstance(content, str):
            raise RequestFailed(f"malformed chat-completions response: content is {type(content).__name__}")
        return content

    def complete(self, request: ChatRequest) -> str:
        """One answer; retries 5xx/429/timeouts/refused connections with exponential backoff."""
        try:
            body = json.dumps(self.payload(request)).encode("utf-8")
        except (OSError, ValueError) as err:  # an image that cannot be read or encoded
            raise RequestFailed(f"cannot build the request: {type(err).__name__}: {err}") from None
        last = "no attempt"
        unreachable = False
        for attempt in range(self.args.annotator_max_retries + 1):
            if attempt:
                time.sleep(min(60.0, self.args.annotator_retry_backoff * 2 ** (attempt - 1)))
            try:
                return self._post(body)
            except urllib.error.HTTPError as err:
                detail = err.read()[:200].decode("utf-8", "replace") if err.fp else ""
                if err.code in FATAL_STATUS:
                    raise EndpointDown(f"annotator endpoint {self.base_url} answered HTTP {err.code} {detail} "
                                       "(wrong model name, URL or API key?)") from None
                last, unreachable = f"HTTP {err.code} {detail}".strip(), False
                if err.code not in RETRY_STATUS and err.code < 500:
                    break
            except RequestFailed as err:
                last, unreachable = str(err), False
            except (socket.timeout, TimeoutError):
                last, unreachable = f"timed out after {self.args.annotator_timeout:g} s", False
            except urllib.error.URLError as err:
                if isinstance(err.reason, (socket.timeout, TimeoutError)):
                    last, unreachable = f"timed out after {self.args.annotator_timeout:g} s", False
                else:
                    last, unreachable = f"cannot connect: {err.reason}", True
            except (ConnectionError, OSError) as err:
                last, unreachable = f"connection error: {err}", True
        if unreachable:
            raise EndpointDown(f"annotator endpoint {self.base_url} stopped answering ({last})")
        raise RequestFailed(f"{last} (after {self.args.annotator_max_retries + 1} attempts)")

    def complete_batch(self, requests: Sequence[ChatRequest], keep_special_tokens: bool = False) -> list[Answer]:
        out: list[Answer] = []
        for request in requests:
            try:
                out.append(self.complete(request))
            except RequestFailed as err:
                out.append(err)
        return out

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------ local model
class LocalBackend:
    """A model loaded through `dopd.model` (its adapter renders prompts and batches them); greedy by default."""

    streaming = False  # one batched `generate` per `annotator_concurrency` prompts

    def __init__(self, args: AnnotateArguments, model_args: ModelArguments) -> None:
        # here, not at the top: torch and the model layer are heavy, and the HTTP backend (standard library only)
        # must not pay for them
        import torch

        from dopd.model import load_adapter, load_model
        from dopd.model.paths import resolve_model_path

        path = args.annotator_model
        if not path:
            raise ConfigError("annotator_model is required: a local folder, a hub id or a `tiny:` name of the "
                              "annotating model")
        path = resolve_model_path(path, "teacher")  # `tiny:<family>[:<size>]`: built on first use, like train's
        self.args = args
        self.adapter = load_adapter(path, model_args)
        self.model = load_model(path, model_args, adapter=self.adapter, role="teacher")
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.grounding = self.adapter.grounding if self.adapter.is_vlm else None
        self._sizes: dict[str, tuple[int, int]] = {}

    def check(self) -> None:
        pass

    def _image(self, path: str) -> Image.Image:
        image = self.adapter.load_image(path)
        self._sizes[path] = image.size
        return image

    def view_size(self, path: str) -> tuple[int, int]:
        if path not in self._sizes:
            self._image(path)
        return self._sizes[path]

    def _decode(self, ids: list[int], keep_special_tokens: bool) -> str:
        stops = set(self.adapter.stop_token_ids)
        while ids and ids[-1] in stops:
            ids = ids[:-1]
        return self.adapter.tokenizer.decode(ids, skip_special_tokens=not keep_special_tokens)

    def complete_batch(self, requests: Sequence[ChatRequest], keep_special_tokens: bool = False) -> list[Answer]:
        out: list[Answer] = []
        encoded = []
        for request in requests:
            try:
                images = [self._image(p) for p in request.images] if self.adapter.is_vlm else []
                encoded.append(self.adapter.encode_prompt(PromptView(request.messages, images)))
                out.append("")
            except Exception as err:  # noqa: BLE001 - one unreadable sample must not stop the batch
                out.append(RequestFailed(f"cannot build the prompt: {type(err).__name__}: {err}"))
        if not encoded:
            return out
        temperature = float(self.args.annotator_temperature)
        kwargs: dict[str, Any] = {"max_new_tokens": self.args.annotator_max_new_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_k=None, top_p=1.0)
        responses = iter(self.adapter.generate(self.model, self.adapter.collate_prompts(encoded), **kwargs))
        return [self._decode(list(next(responses)), keep_special_tokens) if isinstance(o, str) else o for o in out]

    def close(self) -> None:
        self.model = None


def make_backend(args: AnnotateArguments, model_args: ModelArguments, grounding: Optional[str]
                 ) -> Union[OpenAIBackend, LocalBackend]:
    if args.annotator_backend == "openai":
        return OpenAIBackend(args, model_args, grounding)
    if args.annotator_backend == "local":
        return LocalBackend(args, model_args)
    raise ConfigError(f"annotator_backend: unknown `{args.annotator_backend}` (use local or openai)")
