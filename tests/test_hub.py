"""--push_to_hub / --push_to_hub_dry_run (hub.py): the staged files, the model card, the one push at the end, and the
early refusals. Nothing here reaches the Hub: the upload goes to a stand-in HfApi."""

from __future__ import annotations

import os
import tempfile
from unittest import mock

from absl.testing import absltest

from tests.fixtures import save_tiny_t5

import fine_tune_t5  # noqa: E402  (after fixtures: they set HF_HUB_OFFLINE)
from errors import UserError

FAKE_TOKEN = "hf_hubcardleakcheck0123456789abcdef"  # a fake token: must appear in no staged file


class HubRunTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        from examples import write_toy_benchmark

        cls.tmp = tempfile.mkdtemp()
        cls.base = save_tiny_t5(os.path.join(cls.tmp, "base"))
        cls.data = os.path.join(cls.tmp, "toy")
        write_toy_benchmark(cls.data, n_train=64, n_validation=16, n_test=4)

    def argv(self, out: str, *extra: str) -> list[str]:
        return ["--benchmark", "toy", "--dataset_name", "sentiment", "--dataset_dir", self.data, "--model_name_or_path", self.base,
                "--output_dir", out, "--max_steps", "2", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
                "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True", *extra]

    def test_dry_run_stages_the_model_results_and_card(self) -> None:
        out = os.path.join(self.tmp, "dry")
        argv = self.argv(out, "--push_to_hub_dry_run", "--hub_token", FAKE_TOKEN)
        with mock.patch.dict(os.environ):
            results = fine_tune_t5.main(argv)
        hub = os.path.join(out, "hub")
        self.assertEqual(sorted(os.listdir(hub)), ["README.md", "all_results.json", "config.json", "generation_config.json",
                                                   "loss_curve.png", "model.safetensors", "provenance.json", "tokenizer.json",
                                                   "tokenizer_config.json"])
        with open(os.path.join(out, "model.safetensors"), "rb") as a, open(os.path.join(hub, "model.safetensors"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        with open(os.path.join(hub, "README.md"), encoding="utf-8") as f:
            card = f.read()
        self.assertTrue(card.startswith("---\nlibrary_name: transformers\ntags:\n- t5-toolkit\n- fine_tune_t5\n---\n\n# dry\n"), card[:200])
        self.assertIn(f"Trained with `fine_tune_t5.py` of t5-toolkit, starting from `{self.base}`.", card)
        self.assertIn("- benchmark: `toy`\n- dataset_name: `sentiment`\n", card)
        self.assertIn(f"| eval_accuracy | {results['eval_accuracy']:.6g} |", card)
        self.assertIn(f"| eval_loss | {results['eval_loss']:.6g} |", card)
        self.assertIn("| learning_rate | 0.003 |\n", card)
        self.assertIn("| max_steps | 2 |\n", card)
        self.assertIn("python fine_tune_t5.py --benchmark toy --dataset_name sentiment", card)
        self.assertIn("--hub_token '<redacted>'", card)
        self.assertIn("![loss curve](loss_curve.png)", card)
        for name in os.listdir(hub):
            with open(os.path.join(hub, name), "rb") as f:
                self.assertNotIn(FAKE_TOKEN.encode(), f.read(), name)

    def test_push_uploads_the_staged_folder_once_at_the_end(self) -> None:
        out = os.path.join(self.tmp, "pushed")
        api = mock.MagicMock()
        api.whoami.return_value = {"name": "someone"}
        with mock.patch("hub.check_hub"), mock.patch("huggingface_hub.HfApi", return_value=api):
            fine_tune_t5.main(self.argv(out, "--push_to_hub", "--hub_private_repo", "True"))
        api.create_repo.assert_called_once_with("someone/pushed", private=True, exist_ok=True)
        api.upload_folder.assert_called_once()
        self.assertEqual(api.upload_folder.call_args.kwargs["folder_path"], os.path.join(out, "hub"))
        self.assertEqual(api.upload_folder.call_args.kwargs["repo_id"], "someone/pushed")
        self.assertTrue(os.path.isfile(os.path.join(out, "hub", "model.safetensors")))


class HubRefusalTest(absltest.TestCase):
    def refused(self, message: str, argv: tuple[str, ...] = ("--push_to_hub",), **env: str) -> None:
        out = os.path.join(tempfile.mkdtemp(), "never")
        with mock.patch.dict(os.environ, env), self.assertRaises(UserError) as caught:
            fine_tune_t5.main(["--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", "google-t5/t5-small",
                               "--output_dir", out, *argv])
        self.assertIn(message, str(caught.exception))
        self.assertFalse(os.path.exists(out))

    def test_offline(self) -> None:
        self.refused("--push_to_hub: the Hub is off here (HF_HUB_OFFLINE=1); run with --push_to_hub_dry_run", HF_HUB_OFFLINE="1")

    def test_no_token(self) -> None:
        with mock.patch("huggingface_hub.get_token", return_value=None):
            self.refused("--push_to_hub: no Hugging Face token; set HF_TOKEN, pass --hub_token", HF_HUB_OFFLINE="0")

    def test_a_token_the_hub_refuses(self) -> None:
        api = mock.MagicMock()
        api.whoami.side_effect = RuntimeError("401 Client Error: Unauthorized")
        with mock.patch("huggingface_hub.HfApi", return_value=api):
            self.refused("--push_to_hub: the Hub did not accept the token or could not be reached (401 Client Error: Unauthorized)",
                         ("--push_to_hub", "--hub_token", FAKE_TOKEN), HF_HUB_OFFLINE="0")
        api.whoami.assert_called_once_with(token=FAKE_TOKEN)

    def test_a_run_dir_name_the_hub_refuses(self) -> None:
        out = os.path.join(tempfile.mkdtemp(), "learning_rate=0.001,seed=1")  # a groups.py run dir
        with self.assertRaisesRegex(UserError, r"^--push_to_hub: the output dir's name 'learning_rate=0\.001,seed=1' \(the default "
                                               r"repository name\) is not a valid Hub repository name \(.*\); give --hub_model_id"):
            fine_tune_t5.main(["--benchmark", "toy", "--dataset_name", "sentiment", "--model_name_or_path", "google-t5/t5-small",
                               "--output_dir", out, "--push_to_hub"])
        self.assertFalse(os.path.exists(out))

    def test_evaluation_only(self) -> None:
        self.refused("--push_to_hub_dry_run with --no_train: a run pushes what it trained", ("--push_to_hub_dry_run", "--no_train"))


if __name__ == "__main__":
    absltest.main()
