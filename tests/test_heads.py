"""heads.py on tiny random GPT-2, BERT and T5 models: hooks equal transformers 4.x `head_mask` (recomputed here from
the attention probabilities and value vectors) under eager and SDPA attention, leave the model bit-identical when the
mask is ones or removed, carry gradients to the mask; mask files in every format and each one-line error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any
from unittest import mock

import numpy as np
from absl.testing import absltest, parameterized

import heads
from errors import UserError
from tests.fixtures import tiny_lm, tiny_lm_tokenizer

KINDS = ("gpt2", "bert", "t5")
T5_SHAPES = {"encoder": (2, 4), "decoder": (2, 4), "cross": (2, 4)}
GPT2_SHAPES = {"decoder": (2, 4)}

# Module names written out here, not taken from heads.py: the attention output projection and the module whose
# output holds the value vectors, per stack and layer.
PROJECTIONS = {
    "gpt2": {"decoder": "transformer.h.{}.attn.c_proj"},
    "bert": {"encoder": "bert.encoder.layer.{}.attention.output.dense"},
    "t5": {"encoder": "encoder.block.{}.layer.0.SelfAttention.o", "decoder": "decoder.block.{}.layer.0.SelfAttention.o",
           "cross": "decoder.block.{}.layer.1.EncDecAttention.o"},
}
VALUES = {
    "gpt2": {"decoder": "transformer.h.{}.attn.c_attn"},  # q, k, v concatenated
    "bert": {"encoder": "bert.encoder.layer.{}.attention.self.value"},
    "t5": {"encoder": "encoder.block.{}.layer.0.SelfAttention.v", "decoder": "decoder.block.{}.layer.0.SelfAttention.v",
           "cross": "decoder.block.{}.layer.1.EncDecAttention.v"},
}
PROBS = {"gpt2": {"decoder": "attentions"}, "bert": {"encoder": "attentions"},
         "t5": {"encoder": "encoder_attentions", "decoder": "decoder_attentions", "cross": "cross_attentions"}}


def batch(kind: str) -> dict[str, Any]:
    """Two padded sentences (and, for T5, a 4-token decoder input)."""
    encoded = tiny_lm_tokenizer(kind)(["the model learns tokens from text", "a decoder predicts"], return_tensors="pt",
                                      padding=True)
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    if kind == "t5":
        inputs["decoder_input_ids"] = encoded["input_ids"][:, :4].contiguous()
    return inputs


def logits(model: Any, inputs: dict[str, Any], **extra: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(**inputs, **extra).logits


def capture_outputs(model: Any, names: list[str]) -> tuple[dict[str, Any], list[Any]]:
    """Forward hooks recording the output of each named module (after any pre-hook changed its input)."""
    seen: dict[str, Any] = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda module, args, output, name=name: seen.__setitem__(name, output.detach())) for name in names]
    return seen, hooks


def project(module: Any, context: Any) -> Any:
    """The output projection by hand (weight and bias), bypassing the module and its hooks."""
    if type(module).__name__ == "Conv1D":  # GPT-2: weight is (in, out)
        return context @ module.weight + module.bias
    out = context @ module.weight.T
    return out if module.bias is None else out + module.bias


class HookTest(parameterized.TestCase):

    @parameterized.product(kind=KINDS, attn=("eager", "sdpa"))
    def test_equals_transformers4_head_mask(self, kind: str, attn: str) -> None:
        """Per layer: projection output of the masked model == W (merge_h(mask[l, h] * probs_h @ V_h)) + b."""
        import torch

        model = tiny_lm(kind).eval()
        inputs = batch(kind)
        shapes = heads.mask_shape(model.config)
        rng = np.random.default_rng(0)
        masks = {stack: rng.uniform(0.0, 1.0, shape).astype(np.float32) for stack, shape in shapes.items()}
        heads.apply_head_mask(model, masks)
        names = {stack: [template.format(layer) for layer in range(shapes[stack][0])]
                 for stack, template in PROJECTIONS[kind].items()}

        # The masked model under `attn`: each projection's output.
        model.set_attn_implementation(attn)
        outputs, hooks = capture_outputs(model, [name for stack in names.values() for name in stack])
        sdpa = torch.nn.functional.scaled_dot_product_attention
        with mock.patch("torch.nn.functional.scaled_dot_product_attention", wraps=sdpa) as spy:
            logits(model, inputs)
        for hook in hooks:
            hook.remove()
        self.assertEqual(spy.called, attn == "sdpa")  # the implementation really is the one asked for

        # The same masked model, eager: attention probabilities and value vectors of every layer.
        model.set_attn_implementation("eager")
        value_names = [template.format(layer) for stack, template in VALUES[kind].items() for layer in range(shapes[stack][0])]
        values, hooks = capture_outputs(model, value_names)
        with torch.no_grad():
            output = model(**inputs, output_attentions=True)
        for hook in hooks:
            hook.remove()

        for stack, (layers, num_heads) in shapes.items():
            for layer in range(layers):
                probs = getattr(output, PROBS[kind][stack])[layer]  # (batch, heads, queries, keys)
                value = values[VALUES[kind][stack].format(layer)]
                if kind == "gpt2":
                    value = value.chunk(3, dim=-1)[2]
                value = value.unflatten(-1, (num_heads, -1)).transpose(1, 2)  # (batch, heads, keys, head_dim)
                weights = torch.as_tensor(masks[stack][layer])[None, :, None, None]
                projection = model.get_submodule(names[stack][layer])
                with torch.no_grad():
                    expected = project(projection, (weights * (probs @ value)).transpose(1, 2).flatten(-2))
                    unmasked = project(projection, (probs @ value).transpose(1, 2).flatten(-2))
                got = outputs[names[stack][layer]]
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=f"{kind} {attn} {stack} layer {layer}")
                self.assertGreater((got - unmasked).abs().max().item(), 1e-3)  # the mask did something

    @parameterized.parameters(*KINDS)
    def test_ones_removal_and_replacement_are_exact(self, kind: str) -> None:
        import torch

        model = tiny_lm(kind).eval()
        inputs = batch(kind)
        shapes = heads.mask_shape(model.config)
        base = logits(model, inputs)

        # transformers 5 accepts head_mask and ignores it: the reason for the hooks. If this fails, it counts again.
        zeros = torch.zeros(2, 4)
        ignored = {"head_mask": zeros}
        if kind == "t5":
            ignored.update(decoder_head_mask=zeros, cross_attn_head_mask=zeros)
        self.assertTrue(torch.equal(logits(model, inputs, **ignored), base))

        handle = heads.apply_head_mask(model, heads.masks_without(shapes, []))
        self.assertTrue(torch.equal(logits(model, inputs), base))
        for stack in shapes:  # one head off in any stack changes the output
            heads.apply_head_mask(model, heads.masks_without(shapes, [(stack, 1, 2)]))
            self.assertGreater((logits(model, inputs) - base).abs().max().item(), 1e-4, stack)
        one_off = logits(model, inputs)

        # A second mask replaces the first: one hook per projection, and the output of the second mask alone.
        other = heads.masks_without(shapes, [(stack, 0, 0) for stack in shapes])
        handle = heads.apply_head_mask(model, other)
        self.assertEqual([len(m._forward_pre_hooks) for ms in heads.head_modules(model).values() for m in ms],
                         [1] * sum(layers for layers, _ in shapes.values()))
        replaced = logits(model, inputs)
        self.assertFalse(torch.equal(replaced, one_off))
        handle.remove()
        self.assertTrue(torch.equal(logits(model, inputs), base))
        handle.remove()  # twice is harmless
        heads.apply_head_mask(model, other)
        self.assertTrue(torch.equal(logits(model, inputs), replaced))

    @parameterized.parameters(*KINDS)
    def test_gradient_reaches_every_mask(self, kind: str) -> None:
        model = tiny_lm(kind).eval()
        inputs = batch(kind)
        shapes = heads.mask_shape(model.config)
        masks = heads.ones_masks(shapes, requires_grad=True)
        heads.apply_head_mask(model, masks)
        labels = inputs["decoder_input_ids"] if kind == "t5" else inputs["input_ids"]
        model(**inputs, labels=labels).loss.backward()
        for stack, mask in masks.items():
            self.assertEqual(tuple(mask.grad.shape), shapes[stack])
            self.assertTrue(mask.grad.isfinite().all())
            self.assertTrue((mask.grad != 0).all(), f"{stack}: {mask.grad}")

    def test_gradient_is_the_loss_slope(self) -> None:
        """d loss / d mask[l, h] from the hooks equals a central finite difference of the loss in that entry (step 1e-2:
        T5's layer norm keeps float32 variances even in a float64 model, so smaller steps drown in rounding)."""
        import torch

        model = tiny_lm("t5").eval().double()
        inputs = batch("t5")
        shapes = heads.mask_shape(model.config)
        masks = {stack: mask.double().detach().requires_grad_() for stack, mask in heads.ones_masks(shapes).items()}
        heads.apply_head_mask(model, masks)
        model(**inputs, labels=inputs["decoder_input_ids"]).loss.backward()
        for stack, layer, head in (("encoder", 0, 1), ("decoder", 1, 3), ("cross", 0, 2)):
            losses = []
            for step in (1e-2, -1e-2):
                moved = {s: m.detach().clone() for s, m in masks.items()}
                moved[stack][layer, head] += step
                heads.apply_head_mask(model, moved)
                with torch.no_grad():
                    losses.append(model(**inputs, labels=inputs["decoder_input_ids"]).loss.item())
            grad = masks[stack].grad[layer, head].item()
            self.assertAlmostEqual(grad, (losses[0] - losses[1]) / 2e-2, delta=1e-3 * abs(grad) + 1e-6)

    def test_llama_style_mask_scales_output_projection_columns(self) -> None:
        """A Llama (grouped-query attention): masking equals scaling o_proj's input columns of each head."""
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64)
        model = LlamaForCausalLM(config).eval()
        self.assertEqual(heads.mask_shape(model.config), {"decoder": (2, 4)})
        inputs = {"input_ids": torch.tensor([[1, 5, 7, 9, 11, 3]])}
        base = logits(model, inputs)
        mask = np.random.default_rng(1).uniform(0.0, 1.0, (2, 4)).astype(np.float32)
        handle = heads.apply_head_mask(model, {"decoder": mask})
        masked = logits(model, inputs)
        handle.remove()
        self.assertTrue(torch.equal(logits(model, inputs), base))
        with torch.no_grad():
            for layer in range(2):
                weight = model.model.layers[layer].self_attn.o_proj.weight
                weight.mul_(torch.as_tensor(mask[layer]).repeat_interleave(8)[None, :])  # head_dim 8
        torch.testing.assert_close(masked, logits(model, inputs), atol=1e-5, rtol=1e-5)


class ShapeTest(parameterized.TestCase):

    @parameterized.parameters(("gpt2", GPT2_SHAPES), ("bert", {"encoder": (2, 4)}), ("t5", T5_SHAPES))
    def test_tiny_configs_and_their_config_json(self, kind: str, expected: dict[str, tuple[int, int]]) -> None:
        model = tiny_lm(kind)
        self.assertEqual(heads.mask_shape(model.config), expected)
        with tempfile.TemporaryDirectory() as tmp:
            model.config.save_pretrained(tmp)
            with open(os.path.join(tmp, "config.json")) as f:
                self.assertEqual(heads.mask_shape(json.load(f)), expected)
        self.assertEqual({stack: len(modules) for stack, modules in heads.head_modules(model).items()},
                         {stack: layers for stack, (layers, _) in expected.items()})

    @parameterized.parameters(
        ({"model_type": "t5", "num_layers": 3, "num_decoder_layers": 2, "num_heads": 6},
         {"encoder": (3, 6), "decoder": (2, 6), "cross": (2, 6)}),
        ({"model_type": "mt5", "num_layers": 3, "num_heads": 6}, {"encoder": (3, 6), "decoder": (3, 6), "cross": (3, 6)}),
        ({"model_type": "my_t5", "is_encoder_decoder": True, "num_layers": 1, "num_heads": 2},
         {"encoder": (1, 2), "decoder": (1, 2), "cross": (1, 2)}),
        ({"model_type": "roberta", "num_hidden_layers": 12, "num_attention_heads": 12}, {"encoder": (12, 12)}),
        ({"model_type": "gpt2", "n_layer": 12, "n_head": 12}, {"decoder": (12, 12)}),
        ({"model_type": "llama", "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8},
         {"decoder": (16, 32)}),
    )
    def test_plain_dicts(self, config: dict[str, Any], expected: dict[str, tuple[int, int]]) -> None:
        self.assertEqual(heads.mask_shape(config), expected)

    def test_unsupported_model_type(self) -> None:
        with self.assertRaisesRegex(UserError, r"^model type 'bart': head masking does not support it; supported model "
                                               r"types: t5, mt5, umt5, bert, roberta, .*gpt2, llama, .*$") as raised:
            heads.mask_shape({"model_type": "bart", "is_encoder_decoder": True, "encoder_attention_heads": 16})
        self.assertNotIn("\n", str(raised.exception))

    def test_shape_json(self) -> None:
        self.assertEqual(heads.shape_json(T5_SHAPES), '{"encoder": [2, 4], "decoder": [2, 4], "cross": [2, 4]}')
        self.assertEqual(heads.shape_json({"cross": (1, 2), "encoder": (3, 4)}), '{"encoder": [3, 4], "cross": [1, 2]}')
        self.assertEqual(heads.shape_json(GPT2_SHAPES), '{"decoder": [2, 4]}')

    def test_imports_without_torch(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = "import sys, heads; assert 'torch' not in sys.modules, 'torch imported'"
        subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


class ChoiceTest(absltest.TestCase):

    IMPORTANCE = {"decoder": np.array([[0.5, 0.0], [0.9, 0.1]]), "encoder": np.array([[0.1, 0.5], [0.5, 0.2]])}

    def test_top_heads_ties_by_stack_layer_head(self) -> None:
        self.assertEqual(heads.top_heads(self.IMPORTANCE, 1), [("decoder", 1, 0)])
        self.assertEqual(heads.top_heads(self.IMPORTANCE, 4),
                         [("decoder", 1, 0), ("encoder", 0, 1), ("encoder", 1, 0), ("decoder", 0, 0)])
        self.assertEqual(heads.top_heads(self.IMPORTANCE, 8)[-1], ("decoder", 0, 1))

    def test_top_heads_k_out_of_range(self) -> None:
        for k in (0, 9):
            with self.assertRaisesRegex(UserError, rf"^--mask_top_k {k}: the model has 8 heads$"):
                heads.top_heads(self.IMPORTANCE, k)

    def test_masks_without(self) -> None:
        masks = heads.masks_without(T5_SHAPES, [("encoder", 1, 3), ("cross", 0, 0), ("encoder", 0, 2)])
        self.assertEqual(list(masks), ["encoder", "decoder", "cross"])
        np.testing.assert_array_equal(masks["encoder"], [[1, 1, 0, 1], [1, 1, 1, 0]])
        np.testing.assert_array_equal(masks["decoder"], np.ones((2, 4)))
        np.testing.assert_array_equal(masks["cross"], [[0, 1, 1, 1], [1, 1, 1, 1]])
        self.assertEqual(masks["encoder"].dtype, np.float32)
        with self.assertRaises(ValueError):
            heads.masks_without(T5_SHAPES, [("decoder", 2, 0)])


class ReadTest(absltest.TestCase):

    def setUp(self) -> None:
        super().setUp()
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        self.mask = np.array([[1.0, 0.0, 0.5, 1.0], [0.25, 1.0, 1.0, 0.0]], dtype=np.float32)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write_json(self, name: str, data: Any) -> str:
        with open(self.path(name), "w") as f:
            f.write(data if isinstance(data, str) else json.dumps(data))
        return self.path(name)

    def assertOneLineError(self, pattern: str, path: str, shapes: dict[str, tuple[int, int]] = T5_SHAPES) -> None:
        with self.assertRaisesRegex(UserError, pattern) as raised:
            heads.read_head_mask(path, shapes)
        self.assertNotIn("\n", str(raised.exception))

    def assertMasks(self, masks: dict[str, np.ndarray], expected: dict[str, Any]) -> None:
        self.assertEqual(list(masks), list(expected))
        for stack, array in expected.items():
            self.assertEqual(masks[stack].dtype, np.float32)
            np.testing.assert_array_equal(masks[stack], array)

    def test_npz(self) -> None:
        np.savez(self.path("m.npz"), encoder=self.mask, cross=self.mask.astype(np.float64))
        self.assertMasks(heads.read_head_mask(self.path("m.npz"), T5_SHAPES),
                         {"encoder": self.mask, "decoder": np.ones((2, 4)), "cross": self.mask})

    def test_pt_dict_and_bare_tensor(self) -> None:
        import torch

        torch.save({"decoder": torch.tensor(self.mask), "cross": torch.ones(2, 4, dtype=torch.bfloat16)}, self.path("m.pt"))
        self.assertMasks(heads.read_head_mask(self.path("m.pt"), T5_SHAPES),
                         {"encoder": np.ones((2, 4)), "decoder": self.mask, "cross": np.ones((2, 4))})
        torch.save(torch.tensor(self.mask), self.path("bare.pt"))
        self.assertMasks(heads.read_head_mask(self.path("bare.pt"), GPT2_SHAPES), {"decoder": self.mask})

    def test_json_object_and_bare_list(self) -> None:
        path = self.write_json("m.json", {"decoder": self.mask.tolist(), "encoder": [[1, 1, 1, 1], [0, 0, 0, 0]]})
        self.assertMasks(heads.read_head_mask(path, T5_SHAPES),
                         {"encoder": [[1, 1, 1, 1], [0, 0, 0, 0]], "decoder": self.mask, "cross": np.ones((2, 4))})
        path = self.write_json("bare.json", self.mask.tolist())
        self.assertMasks(heads.read_head_mask(path, GPT2_SHAPES), {"decoder": self.mask})

    def test_npy_for_one_stack(self) -> None:
        np.save(self.path("m.npy"), self.mask)
        self.assertMasks(heads.read_head_mask(self.path("m.npy"), GPT2_SHAPES), {"decoder": self.mask})

    def test_file_errors(self) -> None:
        missing = self.path("none.npz")
        self.assertOneLineError(rf"^--head_mask {re.escape(missing)}: no such file$", missing)
        path = self.write_json("m.txt", "1 0")
        self.assertOneLineError(rf"^--head_mask {re.escape(path)}: unknown format '\.txt'; give one of \.npz, \.pt, \.json, "
                                r"\.npy$", path)
        path = self.write_json("bad.json", '{"encoder": [[1, 0]')
        self.assertOneLineError(rf"^--head_mask {re.escape(path)}: not valid JSON \(line 1, column \d+: .*\); give an object "
                                r"such as .*$", path)
        with open(self.path("bad.npz"), "wb") as f:
            f.write(b"not a zip file")
        self.assertOneLineError(rf"^--head_mask {re.escape(self.path('bad.npz'))}: cannot read it as a \.npz file \(.*\)$",
                                self.path("bad.npz"))
        with open(self.path("bad.pt"), "wb") as f:
            f.write(b"not a torch file")
        self.assertOneLineError(rf"^--head_mask {re.escape(self.path('bad.pt'))}: cannot read it as a \.pt file \(.*\)$",
                                self.path("bad.pt"))
        with self.assertRaisesRegex(UserError, rf"^--mask {re.escape(missing)}: no such file$"):
            heads.read_head_mask(missing, T5_SHAPES, flag="--mask")

    def test_key_errors(self) -> None:
        path = self.write_json("m.json", {"encoder": self.mask.tolist(), "decodr": self.mask.tolist()})
        self.assertOneLineError(rf"^{re.escape(path)}: 'decodr' is not an attention stack of this model; its stacks are "
                                r"encoder, decoder, cross$", path)
        path = self.write_json("enc.json", {"encoder": self.mask.tolist()})
        self.assertOneLineError(rf"^{re.escape(path)}: 'encoder' is not an attention stack of this model; its stacks are "
                                r"decoder$", path, GPT2_SHAPES)
        path = self.write_json("empty.json", {})
        self.assertOneLineError(rf"^{re.escape(path)}: holds no mask; give at least one of encoder, decoder, cross as a "
                                r"\(layers, heads\) array$", path)
        path = self.write_json("number.json", 5)
        self.assertOneLineError(rf"^{re.escape(path)}: holds a int; give a mapping of stack \(encoder, decoder, cross\) "
                                r"to a \(layers, heads\) array, or a 2-D list for a model with one stack$", path)

    def test_bare_array_for_several_stacks(self) -> None:
        import torch

        np.save(self.path("m.npy"), self.mask)
        torch.save(torch.tensor(self.mask), self.path("m.pt"))
        for path in (self.path("m.npy"), self.path("m.pt"), self.write_json("m.json", self.mask.tolist())):
            self.assertOneLineError(rf"^{re.escape(path)}: a bare array fits a model with one attention stack, and this model "
                                    r"has 3 \(encoder, decoder, cross\); give an \.npz or \.json with keys encoder, decoder, "
                                    r"cross \(one \(layers, heads\) array each\)$", path)

    def test_values_that_are_not_numbers(self) -> None:
        import torch

        bad = {
            "strings.json": {"encoder": [["a", "b", "c", "d"], ["e", "f", "g", "h"]]},
            "ragged.json": {"encoder": [[1, 0, 1, 1], [1]]},
            "object.json": {"encoder": {"layer": 1}},
            "null.json": {"encoder": None},
        }
        paths = [self.write_json(name, data) for name, data in bad.items()]
        np.savez(self.path("strings.npz"), encoder=np.array([["a"] * 4] * 2))
        np.savez(self.path("objects.npz"), encoder=np.array([[1, None, 1, 1]] * 2, dtype=object))  # pickled
        torch.save({"encoder": "ones"}, self.path("string.pt"))
        paths += [self.path("strings.npz"), self.path("objects.npz"), self.path("string.pt")]
        for path in paths:
            self.assertOneLineError(rf"^{re.escape(path)}: 'encoder' is not an array of numbers; give a \(layers, heads\) "
                                    r"array of 0\.\.1 values$", path)

    def test_nan_and_inf(self) -> None:
        path = self.write_json("nan.json", '{"cross": [[1, NaN, 1, 1], [1, 1, 1, 1]]}')
        np.savez(self.path("inf.npz"), cross=np.where(self.mask > 0.9, np.inf, self.mask))
        for path in (path, self.path("inf.npz")):
            self.assertOneLineError(rf"^{re.escape(path)}: 'cross' holds NaN or infinite values; give a \(layers, heads\) "
                                    r"array of 0\.\.1 values$", path)

    def test_wrong_shape(self) -> None:
        np.savez(self.path("m.npz"), encoder=np.ones((3, 2)))
        self.assertOneLineError(rf"^{re.escape(self.path('m.npz'))}: 'encoder' has shape \(3, 2\); this model's encoder mask "
                                r"is \(2, 4\) \(layers, heads\)$", self.path("m.npz"))
        path = self.write_json("flat.json", {"decoder": [1, 0, 1, 1]})
        self.assertOneLineError(rf"^{re.escape(path)}: 'decoder' has shape \(4,\); this model's decoder mask is \(2, 4\) "
                                r"\(layers, heads\)$", path, GPT2_SHAPES)


if __name__ == "__main__":
    absltest.main()
