"""The CLI's commands for what is served: LLMs (with their deployments, fallbacks and aliases) and presets;
the same verbs as for accounts (list, show, add, set, remove, enable/disable)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from modelport.cli.directory_session import ACTOR, add_verb, emit, in_session, read
from modelport.db import directory, edits, listing, serving, virtual_models
from modelport.db.tables import LLM, LLM_KINDS, ModelAlias, Preset, PresetVisibility
from modelport.protocol.presets import PresetSettings
from modelport.settings import CommonSettings
from modelport.workers.backends.registry import validate_config

LLM_COLUMNS = ("name", "kind", "backend", "enabled", "deployments", "fallbacks", "aliases", "groups")
SCALE_TO_ZERO_HELP = ("its workers may all stop when idle (an autoscaler such as KEDA starts them on its queue "
                      "depth): with no live worker, requests wait in the queue instead of failing with 503")
PRESET_COLUMNS = ("name", "llm", "visibility", "group", "owner", "enabled")


def llm_config(settings: CommonSettings, args: argparse.Namespace, base: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """The backend config from ``base``, then ``--config`` JSON, then the command's flags, validated for the
    backend."""
    config: dict[str, Any] = {**(base or {}), **(json.loads(args.config) if args.config else {})}
    flags = {"base_url": args.base_url, "upstream_model": args.upstream_model, "api_key_env": args.api_key_env,
             "reply": args.reply, "delay_ms": args.delay_ms, "chunks": args.chunks,
             "concurrency": args.concurrency, "model_path": args.model_path, "n_ctx": args.n_ctx,
             "n_threads": args.n_threads, "n_gpu_layers": args.n_gpu_layers, "extra_params": args.extra_param}
    config.update({key: value for key, value in flags.items() if value is not None})
    return validate_config(args.backend, config, settings.upstream_policy())


def _config_flags_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, flag) is not None for flag in (
        "backend", "config", "base_url", "upstream_model", "api_key_env", "reply", "delay_ms", "chunks", "concurrency",
        "model_path", "n_ctx", "n_threads", "n_gpu_layers", "extra_param"))


async def llm_list(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, listing.llms), LLM_COLUMNS,
         "No LLMs yet: `modelport llm add NAME --backend llamacpp` registers the bundled model.")


async def llm_show(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, lambda s: listing.llm(s, args.name)))


async def llm_add(settings: CommonSettings, args: argparse.Namespace) -> None:
    if args.if_missing and await read(settings, lambda s: directory.exists(s, LLM, args.name)):
        print(f"llm {args.name} exists; left as it is")
        return
    config = llm_config(settings, args)
    await in_session(settings, lambda s: directory.add_llm(s, ACTOR, args.name, args.backend, config,
                                                           max_queue=args.max_queue, kind=args.kind,
                                                           scale_to_zero=args.scale_to_zero))
    print(f"llm {args.name} registered ({args.backend}, {args.kind})")


async def llm_set(settings: CommonSettings, args: argparse.Namespace) -> None:
    """Change what was given: the backend config (merged into the current one, re-validated), the queue bound,
    the fallbacks."""
    config = backend = None
    if _config_flags_given(args):
        current = await read(settings, lambda s: listing.llm(s, args.name))
        backend = args.backend = args.backend or current["backend"]
        config = llm_config(settings, args, current["config"] if backend == current["backend"] else None)
    fallbacks = (None if args.fallbacks is None else
                 [name.strip() for name in args.fallbacks.split(",") if name.strip()])
    await in_session(settings, lambda s: edits.set_llm(s, ACTOR, args.name, backend=backend, config=config,
                                                       max_queue=args.max_queue, fallbacks=fallbacks,
                                                       kind=args.kind, scale_to_zero=args.scale_to_zero))
    print(f"llm {args.name} changed" + ("" if fallbacks is None else
                                       f"; it falls back to {', '.join(fallbacks) or 'nothing'}"))


async def llm_price(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: edits.set_price(s, ACTOR, args.name, input_price=args.input,
                                                         output_price=args.output,
                                                         cached_input_price=args.cached_input,
                                                         deployment=args.deployment))
    which = f" (deployment {args.deployment})" if args.deployment else ""
    print(f"llm {args.name}{which} costs {args.input:g} {settings.currency} per million input tokens and "
          f"{args.output:g} per million output tokens, from the next request on")


async def llm_enable(settings: CommonSettings, args: argparse.Namespace) -> None:
    enabled = args.action == "enable"
    await in_session(settings, lambda s: edits.set_enabled(s, ACTOR, LLM, args.name, enabled))
    print(f"llm {args.name} {'enabled' if enabled else 'disabled (requests for it, its aliases and presets: 404)'}")


async def llm_deploy(settings: CommonSettings, args: argparse.Namespace) -> None:
    config = llm_config(settings, args)
    await in_session(settings, lambda s: serving.add_deployment(s, ACTOR, args.llm, args.name, args.backend,
                                                                  config))
    print(f"llm {args.llm} has a deployment {args.name} ({args.backend}); serve it with "
          f"`modelport worker {args.llm} --deployment {args.name}`")


async def llm_remove(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: serving.remove_llm(s, ACTOR, args.name))
    print(f"llm {args.name} removed (with its grants, aliases and presets)")


async def llm_alias(settings: CommonSettings, args: argparse.Namespace) -> None:
    if args.if_missing and await read(settings, lambda s: directory.exists(s, ModelAlias, args.alias)):
        print(f"{args.alias} exists; left as it is")
        return
    await in_session(settings, lambda s: virtual_models.add_alias(s, ACTOR, args.alias, args.llm))
    print(f"{args.alias} is an alias of {args.llm}")


async def preset_list(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, listing.presets), PRESET_COLUMNS,
         "No presets yet: `modelport preset add NAME --llm LLM --system TEXT`.")


async def preset_show(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, lambda s: listing.preset(s, args.name)))


async def preset_add(settings: CommonSettings, args: argparse.Namespace) -> None:
    if args.if_missing and await read(settings, lambda s: directory.exists(s, Preset, args.name)):
        print(f"preset {args.name} exists; left as it is")
        return
    preset = PresetSettings.checked({
        "system_prompt": args.system, "before_prompt": args.before_prompt, "after_prompt": args.after_prompt,
        "client_system": not args.no_client_system, "temperature": args.temperature, "top_p": args.top_p,
        "max_tokens": args.max_tokens, "stop": args.stop})
    visibility = (PresetVisibility.GROUP if args.group else
                  PresetVisibility.PRIVATE if args.owner else PresetVisibility.PUBLIC)
    await in_session(settings, lambda s: virtual_models.add_preset(
        s, ACTOR, args.name, args.llm, preset, visibility=visibility, group_name=args.group, owner_name=args.owner,
        description=args.description))
    print(f"preset {args.name} of {args.llm} added ({visibility.value})")


async def preset_enable(settings: CommonSettings, args: argparse.Namespace) -> None:
    enabled = args.action == "enable"
    await in_session(settings, lambda s: edits.set_enabled(s, ACTOR, Preset, args.name, enabled))
    print(f"preset {args.name} {'enabled' if enabled else 'disabled'}")


async def preset_remove(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: virtual_models.remove_preset(s, ACTOR, args.name))
    print(f"preset {args.name} removed")


def add_backend_flags(parser: argparse.ArgumentParser, *, backend_required: bool = True) -> None:
    """The flags that make a backend config (``llm add``, ``llm deploy`` and ``llm set``)."""
    parser.add_argument("--backend", required=backend_required)
    parser.add_argument("--config", help="backend config as a JSON object")
    parser.add_argument("--base-url")
    parser.add_argument("--upstream-model")
    parser.add_argument("--api-key-env", help="name of the worker's environment variable holding the key "
                        "(one MODELPORT_UPSTREAM_KEY_ENVS allows)")
    parser.add_argument("--extra-param", action="append", help="openai_compat backend: a request field beyond "
                        "OpenAI's that clients may pass to the upstream (repeatable)")
    parser.add_argument("--model-path", help="llamacpp backend: a GGUF file (default: the bundled Gemma 3 270M)")
    parser.add_argument("--n-ctx", type=int, help="llamacpp backend: context window in tokens")
    parser.add_argument("--n-threads", type=int, help="llamacpp backend: CPU threads")
    parser.add_argument("--n-gpu-layers", type=int, help="llamacpp backend: layers offloaded to the GPU")
    parser.add_argument("--reply", help="fake backend: the reply text")
    parser.add_argument("--delay-ms", type=float, help="fake backend: delay between chunks")
    parser.add_argument("--chunks", type=int, help="fake backend: number of chunks")
    parser.add_argument("--concurrency", type=int, help="jobs one worker runs at once")


def add_llm_parsers(commands: Any) -> None:
    llm = commands.add_parser("llm", help="register models").add_subparsers(dest="action", required=True)
    add_verb(llm, "list", llm_list, "list LLMs", json_flag=True)
    add_verb(llm, "show", llm_show, "show an LLM with its deployments", "name", json_flag=True)
    ladd = add_verb(llm, "add", llm_add, "register an LLM", "name")
    add_backend_flags(ladd)
    ladd.add_argument("--max-queue", type=int, default=256, help="outstanding jobs before 429")
    ladd.add_argument("--kind", choices=LLM_KINDS, default="chat", help="chat: chats, completions, responses; "
                      "embedding: /v1/embeddings")
    ladd.add_argument("--scale-to-zero", action="store_true", help=SCALE_TO_ZERO_HELP)
    ladd.add_argument("--if-missing", action="store_true", help="succeed, changing nothing, when it exists")
    deploy = add_verb(llm, "deploy", llm_deploy, "one more deployment of an LLM (its own backend and config); its "
                   "workers, started with --deployment NAME, take jobs from the LLM's queue", "llm", "name")
    add_backend_flags(deploy)
    add_verb(llm, "remove", llm_remove, "unregister an LLM with its grants, aliases and presets (renaming: add the "
          "new name, remove the old, alias the old name to the new)", "name")
    lset = add_verb(llm, "set", llm_set, "change an LLM: backend flags merge into its config", "name")
    add_backend_flags(lset, backend_required=False)
    lset.add_argument("--max-queue", type=int, help="outstanding jobs before 429")
    lset.add_argument("--kind", choices=LLM_KINDS, help="chat or embedding (its workers restart their model)")
    lset.add_argument("--scale-to-zero", action=argparse.BooleanOptionalAction, help=SCALE_TO_ZERO_HELP)
    lset.add_argument("--fallbacks", help="LLMs tried in order when this one cannot serve a request before its "
                      "first delta (comma-separated; empty: none)")
    price = add_verb(llm, "price", llm_price, "set an LLM's prices per million tokens (MODELPORT_CURRENCY)", "name")
    price.add_argument("--input", type=float, required=True, help="per million prompt tokens")
    price.add_argument("--output", type=float, required=True, help="per million completion tokens")
    price.add_argument("--cached-input", type=float, help="per million cached prompt tokens")
    price.add_argument("--deployment", help="price one of its further deployments apart (they may cost more)")
    add_verb(llm, "enable", llm_enable, "serve an LLM again", "name")
    add_verb(llm, "disable", llm_enable, "stop serving an LLM (and its aliases and presets); nothing is deleted",
             "name")
    alias = add_verb(llm, "alias", llm_alias, "another name for an LLM (grants on the LLM cover it; it may have its "
                  "own)", "alias", "llm")
    alias.add_argument("--if-missing", action="store_true", help="succeed, changing nothing, when it exists")


def add_preset_parsers(commands: Any) -> None:
    preset = commands.add_parser("preset", help="presets (Kuwa's bots): an LLM with a system prompt and "
                                 "settings").add_subparsers(dest="action", required=True)
    add_verb(preset, "list", preset_list, "list presets", json_flag=True)
    add_verb(preset, "show", preset_show, "show a preset", "name", json_flag=True)
    padd = add_verb(preset, "add", preset_add, "add a preset; without --owner or --group everyone who may use the "
                 "LLM may use it", "name")
    padd.add_argument("--llm", required=True)
    padd.add_argument("--system", default="", help="system prompt, sent before the client's messages")
    padd.add_argument("--before-prompt", default="", help="text put before the user's last prompt")
    padd.add_argument("--after-prompt", default="", help="text put after the user's last prompt")
    padd.add_argument("--no-client-system", action="store_true", help="refuse requests with system messages")
    padd.add_argument("--temperature", type=float, help="default temperature")
    padd.add_argument("--top-p", type=float, help="default top_p")
    padd.add_argument("--max-tokens", type=int, help="default and most completion tokens a client may ask for")
    padd.add_argument("--stop", action="append", default=[], help="default stop sequence (repeatable)")
    padd.add_argument("--owner", help="the user who manages it; without --group, only they may use it")
    padd.add_argument("--group", help="only this group's members may use it")
    padd.add_argument("--description", default="")
    padd.add_argument("--if-missing", action="store_true", help="succeed, changing nothing, when it exists")
    add_verb(preset, "enable", preset_enable, "serve a preset again", "name")
    add_verb(preset, "disable", preset_enable, "stop serving a preset; nothing is deleted", "name")
    add_verb(preset, "remove", preset_remove, "remove a preset", "name")
