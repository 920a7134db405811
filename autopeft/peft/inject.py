"""Inject a plan into a model, and take it out again.

One generic mechanism for every method (see ``autopeft.methods.base``):

- a projection that receives linear-site methods is replaced on its parent by :class:`AdaptedLinear`,
  which keeps the original module as ``base`` and applies each method's transform to its columns;
- attention-level methods are attached to the attention module as a named submodule that autopeft's
  attention function reads (``autopeft.peft.attention``);
- a norm that receives a method (LN tuning) is wrapped like a projection;
- input-level methods (soft prompts) are registered on the base model and hooked onto its input and
  output (``autopeft.peft.prompting``);
- a module with ``captures = "attention" | "mlp"`` gets a forward pre-hook on that sublayer of its block
  that hands it the sublayer's input (a parallel adapter's input, a gate's input).

:func:`inject` freezes every base parameter and returns an :class:`InjectionHandle` that knows each
injected module by its placement key (``layers.<i>.<site>.<method>``). ``handle.remove()`` puts the
original modules back and restores every ``requires_grad`` flag, the task head's values (trained with
the plan, saved with the adapter) and the attention implementation: the base model's state dict and
outputs are bitwise what they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

from autopeft.core.arch import ModelArch, arch_from_config
from autopeft.core.errors import UserError
from autopeft.methods import Placement as MethodPlacement
from autopeft.methods import get_method
from autopeft.peft.adapted_linear import AdaptedLinear
from autopeft.peft.attention import PREFIX_ATTR, switch_to_prefix_attention
from autopeft.peft.merge import merge_sites, unmerge_sites
from autopeft.peft.plan import Placement, Plan
from autopeft.peft.prompting import attach_prompt

HEAD_PREFIX = "head."


class InjectionHandle:
    def __init__(self, model: nn.Module, arch: ModelArch, plan: Plan) -> None:
        self.model = model
        self.arch = arch
        self.plan = plan
        self.modules: dict[str, nn.Module] = {}
        self.head: dict[str, nn.Parameter] = {}
        self._undo: list[Callable[[], None]] = []
        self._removed = False
        self._merged: list | None = None  # autopeft.peft.merge.MergedSite records while merged

    # --- parameters -----------------------------------------------------------------------
    def adapter_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for key, module in self.modules.items():
            for name, param in module.named_parameters():
                yield f"{key}.{name}", param

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield from self.adapter_parameters()
        for name, param in self.head.items():
            yield HEAD_PREFIX + name, param

    def num_adapter_params(self) -> int:
        return sum(p.numel() for _, p in self.adapter_parameters())

    def num_head_params(self) -> int:
        return sum(p.numel() for p in self.head.values())

    # --- training hooks (optional methods of injected modules) -----------------------------
    def regularization(self) -> torch.Tensor | None:
        """Sum of the modules' extra loss terms (``module.regularization()``, e.g. AdaLoRA's orthogonality)."""
        terms = [m.regularization() for m in self._hooked("regularization")]
        return torch.stack([t.float() for t in terms]).sum() if terms else None

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Called after ``optimizer.step()``, before gradients are zeroed (e.g. AdaLoRA's rank allocation).

        ``step`` counts completed optimizer steps (1-based); ``total_steps`` is the run's planned length.
        """
        for module in self._hooked("after_optimizer_step"):
            module.after_optimizer_step(step, total_steps)

    # --- merging (methods that declare ``merge``; see autopeft.peft.merge) -----------------------
    def merge(self) -> list[str]:
        """Fold the modules of every fully mergeable projection into its weights; returns their keys."""
        if self._merged is None:
            self._merged = merge_sites(self)
        return [key for site in self._merged for key in site.keys]

    def unmerge(self) -> None:
        """Restore the original weights (bitwise) and the unmerged modules."""
        if self._merged is not None:
            unmerge_sites(self._merged)
            self._merged = None

    def _hooked(self, name: str) -> list[nn.Module]:
        return [m for module in self.modules.values() for m in module.modules() if callable(getattr(m, name, None))]

    def _stored_tensors(self, folded: bool = True) -> dict[str, torch.Tensor]:
        """Trainable parameters plus persistent buffers (frozen state a method must keep, e.g. LoRA-FA's A).

        With ``folded``, a module with ``folded_tensors()`` stores those instead of its parameters (e.g. a
        prefix's plain key/values instead of its reparameterisation MLP).
        """
        own: dict[str, torch.Tensor] = {}
        for key, module in self.modules.items():
            if folded and callable(getattr(module, "folded_tensors", None)):
                own.update({f"{key}.{name}": t for name, t in module.folded_tensors().items()})
                continue
            own.update({f"{key}.{name}": p for name, p in module.named_parameters()})
            for name, buffer in module.named_buffers():
                if name.rpartition(".")[2] not in _non_persistent(module, name):
                    own[f"{key}.{name}"] = buffer
        own.update({HEAD_PREFIX + name: p for name, p in self.head.items()})
        return own

    def state_dict(self, folded: bool = True) -> dict[str, torch.Tensor]:
        """Adapter and head weights by stable names; what ``adapter.safetensors`` holds.

        ``folded=False`` keeps training-time parameters (a reparameterisation MLP, a prompt encoder)
        instead of what they produce: the state a training checkpoint must resume from.
        """
        return {name: t.detach().contiguous() for name, t in self._stored_tensors(folded).items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str = "adapter") -> None:
        """Load either form of :meth:`state_dict`; a module given its folded form is folded first."""
        for key, module in self.modules.items():
            raw = [f"{key}.{name}" for name, _ in module.named_parameters()]
            if callable(getattr(module, "fold", None)) and not all(name in state for name in raw):
                module.fold()
        own = self._stored_tensors(folded=False)
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise UserError(
                f"{source} does not match the plan: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
            )
        with torch.no_grad():
            for name, param in own.items():
                if state[name].shape != param.shape:
                    raise UserError(f"{source}: '{name}' has shape {tuple(state[name].shape)}, "
                                    f"the plan needs {tuple(param.shape)}")
                param.copy_(state[name])

    # --- removal --------------------------------------------------------------------------
    def remove(self) -> None:
        if self._removed:
            return
        self.unmerge()
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.modules.clear()
        self._removed = True

    def __enter__(self) -> InjectionHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _non_persistent(module: nn.Module, buffer_path: str) -> set[str]:
    owner = module.get_submodule(buffer_path.rpartition(".")[0]) if "." in buffer_path else module
    return set(owner._non_persistent_buffers_set)


def head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters of the task head: those outside ``model.base_model`` and not tied into it."""
    base = getattr(model, "base_model", model)
    if base is model:
        return {}
    base_ids = {id(p) for p in base.parameters()}
    prefix = getattr(model, "base_model_prefix", "")
    return {
        name: p
        for name, p in model.named_parameters(remove_duplicate=True)
        if not name.startswith(prefix + ".") and id(p) not in base_ids
    }


def inject(model: nn.Module, plan: Plan, arch: ModelArch | None = None, train_head: bool = True) -> InjectionHandle:
    """Freeze ``model``, add ``plan``'s modules, and return the handle that removes them."""
    arch = arch or arch_from_config(model.config)
    placements = plan.placements(arch)
    handle = InjectionHandle(model, arch, plan)
    try:
        _freeze(model, handle)
        if train_head:
            handle.head = head_parameters(model)
            saved = {name: p.detach().clone() for name, p in handle.head.items()}

            def restore_head(head=handle.head, saved=saved) -> None:
                with torch.no_grad():
                    for name, p in head.items():
                        p.copy_(saved[name])

            handle._undo.append(restore_head)
            for p in handle.head.values():
                p.requires_grad_(True)
        if any(get_method(p.method).placement is MethodPlacement.ATTENTION for p in placements):
            handle._undo.append(switch_to_prefix_attention(model))
        reference = next(model.parameters())
        for placement in placements:
            module = _build(placement, arch).to(device=reference.device)
            _attach(model, arch, placement, module, handle)
            handle.modules[placement.key] = module
        for name in dict.fromkeys(p.method for p in placements):
            link = getattr(get_method(name), "link", None)
            if link is not None:  # state shared by a method's modules across sites (AdaLoRA's rank budget)
                link([handle.modules[p.key] for p in placements if p.method == name])
    except BaseException:
        handle.remove()
        raise
    return handle


def _freeze(model: nn.Module, handle: InjectionHandle) -> None:
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in flags:
        p.requires_grad_(False)

    def restore() -> None:
        for p, flag in flags.items():
            p.requires_grad_(flag)

    handle._undo.append(restore)


def _build(placement: Placement, arch: ModelArch) -> nn.Module:
    method = get_method(placement.method)
    module = method.build(placement.config, arch, placement.target)
    return module.float()  # trainable weights stay fp32 (master weights), whatever the base dtype


def _attach(model: nn.Module, arch: ModelArch, placement: Placement, module: nn.Module,
            handle: InjectionHandle) -> None:
    method = get_method(placement.method)
    if hasattr(module, "captures"):
        handle._undo.append(_capture_input(model, arch, placement, module))
    if method.placement is MethodPlacement.INPUT:
        if hasattr(module, "bind"):  # e.g. a prompt initialised from the vocabulary's embeddings
            module.bind(model.get_input_embeddings(), None)
        handle._undo.append(attach_prompt(model, arch, module, f"autopeft_{placement.method}"))
        return
    if method.placement is MethodPlacement.ATTENTION:
        attention = arch.attention_module(model, placement.layer)
        if hasattr(attention, PREFIX_ATTR):
            raise UserError(f"the plan puts two prefix methods on layer {placement.layer}; a layer takes one")
        attention.add_module(PREFIX_ATTR, module)
        handle._undo.append(lambda: delattr(attention, PREFIX_ATTR))  # `attention` is not rebound
        return
    target = placement.target
    assert target is not None
    block = arch.blocks(model)[placement.layer]
    parent_path, _, child = target.path.rpartition(".")
    parent = block.get_submodule(parent_path) if parent_path else block
    wrapper = getattr(parent, child)
    if not isinstance(wrapper, AdaptedLinear):
        original = wrapper
        wrapper = AdaptedLinear(original)
        setattr(parent, child, wrapper)
        handle._undo.append(lambda: setattr(parent, child, original))
    fused = placement.linear is not None and placement.linear.out_slice[1] > 1
    if hasattr(module, "bind"):  # methods that read the frozen weight (e.g. DoRA's column norms)
        module.bind(wrapper.base, target)
    wrapper.add(f"{placement.site}_{placement.method}", module,
                placement.linear.columns if fused else None, method.stage)


def _capture_input(model: nn.Module, arch: ModelArch, placement: Placement, module: nn.Module) -> Callable[[], None]:
    """Hand ``module.capture`` the input of its block's attention or MLP sublayer on every forward."""
    path = {"attention": arch.family.attention_path, "mlp": arch.family.mlp_path}[module.captures]
    sublayer = arch.block_module(model, placement.layer, path)

    def hook(_, args, kwargs):
        module.capture(args[0] if args else kwargs["hidden_states"])

    return sublayer.register_forward_pre_hook(hook, with_kwargs=True).remove
