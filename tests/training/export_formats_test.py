"""Tests of training/export.py's LiteRT and ONNX exports, each run in its own runtime.

Every exported file is run in a subprocess that imports neither keras_vit, training, Keras nor
TensorFlow: the LiteRT interpreter of the `ai-edge-litert` package for `.tflite` files,
`onnxruntime` for `.onnx` files. Their outputs are compared with the Keras model's on the same
uint8 images.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="LiteRT export and the training binary need TensorFlow")

# Runs the exported files on the saved images in a process without keras_vit, Keras or
# TensorFlow; writes their outputs and a description of each file.
_RUNTIME = textwrap.dedent(
    """
    import json, sys
    import numpy as np

    path, inputs, output = sys.argv[1:4]
    images = np.load(inputs)["images"]
    description = {}
    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)
        runner = interpreter.get_signature_runner()
        # Batch 1 and the whole batch: the input's batch axis is dynamic.
        first = runner(images=images[:1])
        outputs = runner(images=images)
        (spec,) = interpreter.get_input_details()
        description["input"] = [spec["dtype"].__name__, spec["shape_signature"].tolist()]
        description["signatures"] = interpreter.get_signature_list()
        tensors = interpreter.get_tensor_details()
        # Op names and the dtypes of their inputs (the interpreter has no public op list).
        ops = interpreter._get_ops_details()
        description["ops"] = sorted({op["op_name"] for op in ops})
        description["matmul_input_dtypes"] = sorted({
            tensors[i]["dtype"].__name__ for op in ops
            if op["op_name"] in ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D")
            for i in op["inputs"] if i >= 0})
    else:
        import onnx
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        first = dict(zip(["logits", "probabilities"],
                         session.run(["logits", "probabilities"], {"images": images[:1]})))
        outputs = dict(zip(["logits", "probabilities"],
                           session.run(["logits", "probabilities"], {"images": images})))
        proto = onnx.load(path)
        (spec,) = session.get_inputs()
        description["input"] = [spec.name, spec.type, spec.shape]
        description["outputs"] = [[o.name, o.type, o.shape] for o in session.get_outputs()]
        description["opset"] = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
        description["doc_string"] = proto.doc_string
    np.savez(output, logits=outputs["logits"], probabilities=outputs["probabilities"],
             first_logits=first["logits"])
    description["modules"] = sorted(
        m for m in sys.modules if m.split(".")[0] in ("keras_vit", "training", "keras",
                                                      "tensorflow", "torch", "jax"))
    print(json.dumps(description))
    """
)


def run_in_runtime(path, images, tmp_path, run_outside_checkout):
    """(description, {logits, probabilities, first_logits}) of the file run on `images`."""
    description, outputs = run_outside_checkout(_RUNTIME, path, {"images": images}, tmp_path)
    assert description["modules"] == []
    return description, outputs


def random_model(channels=3, **kwargs):
    import keras_vit

    model = keras_vit.ViT("mu/4", image_size=16, num_classes=5, num_channels=channels,
                          **kwargs)
    # The head is zero-initialized: give it weights so that the logits differ per image.
    head = model.get_layer("head")
    head.kernel.assign(np.random.default_rng(0).normal(size=head.kernel.shape))
    head.bias.assign(np.arange(5, dtype="float32") * 0.1)
    return model


def random_images(n=6, channels=3, size=16):
    return np.random.default_rng(1).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def keras_logits(model, images):
    """The model's logits on uint8 images, normalized as evaluation normalizes (x/127.5 - 1)."""
    pixels = images.astype("float32") / 127.5 - 1.0
    return keras.ops.convert_to_numpy(model(pixels, training=False))


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory, tfds_data_dir):
    """A ViT-mu/4 trained on 16x16 digits: (model.keras path, test images, test labels)."""
    if BACKEND != "tensorflow":
        pytest.skip("the training binary needs the TensorFlow backend")
    from training import input_pipeline, train
    from training.config import Config

    workdir = tmp_path_factory.mktemp("digits") / "workdir"
    config = Config(data_dir=tfds_data_dir, variant="mu/4", image_size=16, train_steps=800,
                    warmup_steps=50, checkpoint_every_steps=800, log_every_steps=800,
                    progress=False, export=False)
    _, metrics = train.train_and_evaluate(config, str(workdir))
    # Trained well enough that top-1 agreement measures quantization, not ties (measured:
    # 0.978 after these 800 steps, 8 s on the 2-core CPU).
    assert metrics["eval_accuracy"] > 0.9
    images, labels = input_pipeline.raw_images(
        "digits", data_dir=tfds_data_dir, image_size=16, split="test")
    return str(workdir / "model.keras"), images, labels


@tensorflow_only
@pytest.mark.parametrize("quantize", ["none", "float16", "dynamic_range", "int8"])
def test_litert_export_runs_in_the_litert_runtime(quantize, trained_digits, tfds_data_dir,
                                                  tmp_path, run_outside_checkout):
    from training import export, input_pipeline
    from training.model_loading import load_model

    path, images, labels = trained_digits
    model = load_model(path)
    calibration = None
    if quantize == "int8":
        calibration, _ = input_pipeline.raw_images(
            "digits", data_dir=tfds_data_dir, image_size=16, split="train", count=200, seed=0)
    out = export.export(path, tmp_path / "model.tflite", format="litert", quantize=quantize,
                        calibration_images=calibration)
    assert out == str(tmp_path / "model.tflite")
    assert os.listdir(tmp_path) == ["model.tflite"]
    description, outputs = run_in_runtime(out, images, tmp_path, run_outside_checkout)

    assert description["input"] == ["uint8", [-1, 16, 16, 1]]
    assert description["signatures"] == {
        "serving_default": {"inputs": ["images"], "outputs": ["logits", "probabilities"]}}
    # Builtin ops only: no TF Select ("Flex...") or custom ops.
    assert not [op for op in description["ops"] if op.startswith("Flex") or op == "CUSTOM"]
    expected = keras_logits(model, images)
    logits = outputs["logits"]
    assert logits.shape == (359, 10)
    np.testing.assert_allclose(outputs["first_logits"], logits[:1], atol=1e-5)
    # Full-integer softmax outputs are int8 steps of 1/256, dequantized.
    np.testing.assert_allclose(outputs["probabilities"].sum(-1), 1.0,
                               atol=0.02 if quantize == "int8" else 1e-5)
    agreement = np.mean(logits.argmax(-1) == expected.argmax(-1))
    accuracy, float_accuracy = (np.mean(x.argmax(-1) == labels) for x in (logits, expected))
    error = np.abs(logits - expected).max()
    if quantize == "none":
        assert error < 1e-4
        assert description["matmul_input_dtypes"] == ["float32"]
    elif quantize == "float16":
        # Weights stored in float16, computed in float32: errors of float16 rounding only.
        assert error < 0.05 and agreement == 1.0
        assert "DEQUANTIZE" in description["ops"]
    elif quantize == "dynamic_range":
        assert agreement >= 0.99
        assert "int8" in description["matmul_input_dtypes"]
    else:
        # Full integer: every matmul and the patch convolution take int8 inputs and weights.
        assert agreement >= 0.99, agreement
        assert abs(accuracy - float_accuracy) <= 0.01
        assert description["matmul_input_dtypes"] == ["int32", "int8"]
    # Quantization changes the numbers: a file that ignored it would match float exactly.
    if quantize != "none":
        assert error > 1e-4


def test_onnx_export_runs_in_onnxruntime(tmp_path, run_outside_checkout):
    from training import export

    if BACKEND == "jax":
        with pytest.raises(ValueError, match="ONNX export runs on the TensorFlow or PyTorch "
                                             "backend, not 'jax'"):
            export.export(random_model(), tmp_path / "model.onnx", format="onnx")
        assert os.listdir(tmp_path) == []
        return
    model = random_model(channels=3)
    images = random_images(6, channels=3)
    out = export.export(model, tmp_path / "model.onnx", format="onnx")
    assert os.listdir(tmp_path) == ["model.onnx"]
    description, outputs = run_in_runtime(out, images, tmp_path, run_outside_checkout)

    assert description["input"] == ["images", "tensor(uint8)", ["batch", 16, 16, 3]]
    assert description["outputs"] == [["logits", "tensor(float)", ["batch", 5]],
                                      ["probabilities", "tensor(float)", ["batch", 5]]]
    assert description["opset"]["ai.onnx"] == export.ONNX_OPSET == 18
    assert "uint8 (batch, 16, 16, 3) raw pixels in [0, 255]" in description["doc_string"]
    expected = keras_logits(model, images)
    assert len({tuple(row) for row in expected.round(4)}) == 6
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(outputs["first_logits"], expected[:1], atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        outputs["probabilities"], keras.ops.convert_to_numpy(keras.ops.softmax(expected)),
        atol=1e-5)


def test_onnx_export_of_a_model_with_its_own_preprocessing(tmp_path, run_outside_checkout):
    # A model built with include_preprocessing takes raw pixels: the export must not normalize
    # them a second time.
    if BACKEND == "jax":
        pytest.skip("ONNX export runs on TensorFlow or PyTorch")
    from training import export

    model = random_model(channels=3, include_preprocessing=True)
    images = random_images(4)
    out = export.export_onnx(model, tmp_path / "model.onnx")
    _, outputs = run_in_runtime(out, images, tmp_path, run_outside_checkout)
    expected = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4, rtol=0)


@tensorflow_only
def test_saved_model_of_a_model_with_its_own_preprocessing(tmp_path):
    import tensorflow as tf

    from training import export

    model = random_model(channels=3, include_preprocessing=True)
    images = random_images(4)
    out = export.export(model, tmp_path / "saved_model")
    serve = tf.saved_model.load(out).signatures["serving_default"]
    expected = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
    np.testing.assert_allclose(serve(images=tf.constant(images))["logits"].numpy(), expected,
                               atol=1e-4, rtol=0)


def test_mixed_precision_model_is_exported_in_float32(tmp_path, run_outside_checkout):
    from training import export

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = random_model(channels=3)
    finally:
        keras.config.set_dtype_policy(policy)
    copy = export.float32_model(model)
    assert copy is not model
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    assert model.get_layer("encoder_block_0").dtype_policy.name == "mixed_bfloat16"
    images = random_images(4)
    expected = keras_logits(copy, images)
    # The same weights: the float32 copy differs from the bfloat16 computation by its rounding.
    np.testing.assert_allclose(keras_logits(model, images), expected, atol=0.15, rtol=0.05)
    assert export.float32_model(copy) is copy
    if BACKEND == "jax":
        return
    out = export.export(model, tmp_path / "model.onnx", format="onnx")
    _, outputs = run_in_runtime(out, images, tmp_path, run_outside_checkout)
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(format="tflite"), "Unknown format 'tflite': expected one of saved_model, litert, onnx"),
    (dict(format="litert", quantize="int4"),
     "Unknown quantize 'int4': expected one of none, float16, dynamic_range, int8"),
    (dict(format="onnx", quantize="float16"),
     "quantize 'float16' applies to format 'litert' only; format 'onnx' is exported in "
     "float32"),
    (dict(format="litert", quantize="int8"), "quantize 'int8' needs calibration images"),
    (dict(format="onnx", name="model.tflite"), "of format 'onnx' must end in '.onnx'"),
    (dict(format="litert", name="model.onnx"), "of format 'litert' must end in '.tflite'"),
    (dict(format="saved_model", image_size=32),
     "image_size 32 differs from the 16x16 images that model 'vit_mu4' takes"),
])
def test_bad_arguments_are_named_and_nothing_is_written(tmp_path, kwargs, message):
    from training import export

    kwargs = dict(kwargs)
    output = tmp_path / kwargs.pop("name", "model.tflite" if kwargs["format"] == "litert"
                                   else "model.onnx" if kwargs["format"] == "onnx" else "out")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export.export(random_model(), output, **kwargs)
    assert os.listdir(tmp_path) == []


# (The SavedModel of such a model serves images at their own size: dynamic_image_size_test.)
@pytest.mark.parametrize("format, name", [("litert", "m.tflite"), ("onnx", "m.onnx")])
def test_a_model_of_any_image_size_needs_image_size(tmp_path, format, name):
    from training import export

    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, outputs, name="any_size")
    with pytest.raises(ValueError, match=r"model 'any_size' takes images of any size "
                                         r"\(\(None, None, None, 3\)\); give image_size"):
        export.export(model, tmp_path / name, format=format)
    assert os.listdir(tmp_path) == []
    assert export.input_size(model, (24, 32)) == (24, 32, 3)
    assert export.serving_model(model, 24).input_shape == (None, 24, 24, 3)


@tensorflow_only
def test_calibration_images_of_the_wrong_shape(tmp_path):
    from training import export

    with pytest.raises(ValueError, match=r"calibration images of dtype float32 and shape "
                                         r"\(2, 16, 16, 3\): expected uint8 images "
                                         r"\(N, 16, 16, 3\)"):
        export.export(random_model(), tmp_path / "m.tflite", format="litert", quantize="int8",
                      calibration_images=np.zeros((2, 16, 16, 3), "float32"))
    assert os.listdir(tmp_path) == []


def test_a_failed_conversion_leaves_nothing_at_the_output(tmp_path, monkeypatch):
    from training import export

    if BACKEND == "jax":
        pytest.skip("no file format is exported from JAX but the SavedModel")
    target = tmp_path / "model.onnx"
    target.write_bytes(b"an older export")

    def half_written(filepath):
        with open(filepath, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("converter crashed")

    # The converter of this backend writes part of its file, then fails.
    if BACKEND == "tensorflow":
        monkeypatch.setattr(keras.Model, "export",
                            lambda self, filepath, *args, **kwargs: half_written(filepath))
    else:
        from training import export_formats

        monkeypatch.setattr(export_formats, "_export_onnx_torch",
                            lambda serving, path, opset: half_written(path))
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.export(random_model(), target, format="onnx")
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]
    assert target.read_bytes() == b"an older export"


@tensorflow_only
def test_export_cli_int8_litert_from_the_training_data(trained_digits, tfds_data_dir, tmp_path,
                                                       repo_root, subprocess_env,
                                                       run_outside_checkout):
    path, images, labels = trained_digits
    proc = subprocess.run(
        [sys.executable, "-m", "training.export", f"--model={path}", "--format=litert",
         "--quantize=int8", "--dataset=digits", f"--data_dir={tfds_data_dir}",
         "--calibration_images=100", f"--output={tmp_path / 'digits.tflite'}"],
        cwd=repo_root, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert f"wrote {tmp_path / 'digits.tflite'} (litert, quantize=int8)" in proc.stdout
    description, outputs = run_in_runtime(tmp_path / "digits.tflite", images, tmp_path,
                                          run_outside_checkout)
    assert description["matmul_input_dtypes"] == ["int32", "int8"]
    assert np.mean(outputs["logits"].argmax(-1) == labels) > 0.9


# Parses each command line with the binary's flags and runs its main(), in one process (one
# TensorFlow start instead of one per case); prints what each SystemExit said. The binary itself
# runs in test_export_cli_int8_litert_from_the_training_data.
_CLI_CASES = textwrap.dedent(
    """
    import json, sys
    from absl import flags as absl_flags
    from training import export, flags as training_flags

    training_flags.define_export_flags()
    said = []
    for argv in json.loads(sys.argv[1]):
        training_flags.FLAGS.unparse_flags()
        try:
            training_flags.FLAGS(["training.export"] + argv)
        except absl_flags.Error as exc:
            # What absl's app.run prints ("FATAL Flags parsing error: ...") before exiting 1.
            said.append("absl: " + str(exc))
            continue
        try:
            export.main(["training.export"])
            said.append(None)
        except SystemExit as exc:
            # A string SystemExit: the binary prints it to stderr and exits with status 1.
            said.append(exc.code if isinstance(exc.code, str) else repr(exc.code))
    print(json.dumps(said))
    """
)


@tensorflow_only
def test_export_cli_bad_flags(tmp_path, repo_root, subprocess_env):
    import json

    model = random_model(channels=1)
    model.save(tmp_path / "model.keras")
    cases = [
        (["--format=litert", "--quantize=int8", "--output={tmp}/m.tflite"],
         "--quantize=int8 needs --dataset (and --data_dir)"),
        (["--format=onnx", "--quantize=int8", "--output={tmp}/m.onnx"],
         "quantize 'int8' applies to format 'litert' only"),
        (["--format=litert", "--output="], "--output is required"),
    ]
    # Refused by absl's parser, before main(): --output is a required flag, and --output_dir
    # (its old name) is no flag of the export binary any more.
    parse_errors = [
        (["--format=litert"], "flag --output=None: Flag --output must have a value other than "
         "None"),
        (["--output_dir={tmp}/b"], "Unknown command line flag 'output_dir'"),
        (["--output={tmp}/a", "--output_dir={tmp}/b"], "Unknown command line flag 'output_dir'"),
    ]
    argvs = [[f"--model={tmp_path / 'model.keras'}"] + [a.format(tmp=tmp_path) for a in args]
             for args, _ in cases + parse_errors]
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_CASES, json.dumps(argvs)],
        cwd=repo_root, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(said) == len(cases) + len(parse_errors)
    for (args, message), text in zip(cases, said):
        assert text is not None and text.startswith("training.export: error: "), (args, text)
        assert message.format(tmp=tmp_path) in text, (args, text)
    for (args, message), text in zip(parse_errors, said[len(cases):]):
        assert text is not None and text.startswith("absl: "), (args, text)
        assert message in text, (args, text)
    assert os.listdir(tmp_path) == ["model.keras"]


@pytest.mark.skipif(BACKEND == "tensorflow", reason="LiteRT export works on TensorFlow")
def test_litert_on_another_backend_names_it(tmp_path):
    from training import export

    with pytest.raises(ValueError, match=f"LiteRT export needs the TensorFlow backend, not "
                                         f"'{BACKEND}': run with KERAS_BACKEND=tensorflow"):
        export.export(random_model(), tmp_path / "m.tflite", format="litert")
    assert os.listdir(tmp_path) == []
