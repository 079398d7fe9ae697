"""Text datasets from TensorFlow Datasets, read without TensorFlow.

`tfds.data_source` gives random access to a prepared dataset (ArrayRecord
files); grain shuffles, tokenizes and packs it on the fly, because corpora
like c4 are far too large to tokenize up front.

    docs = tfds_documents("lm1b", "train", data_dir=DIR)       # len(docs), docs[i] -> str
    stream = tfds_token_stream(docs, tokenizer, seq_len=1024, seed=0)
    # a grain.IterDataset of {"inputs", "targets"}: a source for
    # data/text_pipeline's mixture_loader / per_source_loader

Text fields are bytes in real data and str under `tfds.testing.mock_data`;
both are accepted. Builders of `tensorflow_datasets.text` (c4, wiki40b, ...)
register only once that module is imported, which `tfds_documents` does.
"""

import grain
import numpy as np


class TfdsDocuments:
  """Random access to the text field of a tfds split, as str."""

  def __init__(self, source, name: str, split: str, text_key: str):
    self._source, self.name, self.split, self.text_key = source, name, split, text_key
    if len(source) == 0:
      raise ValueError(f"tfds {name}/{split} has no examples; check the split name.")

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> str:
    record = self._source[int(index)]
    if self.text_key not in record:
      raise KeyError(
        f"tfds {self.name}/{self.split} example {index} has no field "
        f"{self.text_key!r}; its fields are {sorted(record)}: pass text_key."
      )
    text = record[self.text_key]
    if isinstance(text, np.ndarray):  # a scalar string tensor as numpy
      text = text.item()
    if isinstance(text, bytes):
      try:
        return text.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(
          f"tfds {self.name}/{self.split} example {index}: field "
          f"{self.text_key!r} is not valid UTF-8 ({e})."
        ) from e
    if isinstance(text, str):
      return text
    raise TypeError(
      f"tfds {self.name}/{self.split} field {self.text_key!r} holds "
      f"{type(text).__name__}, not text; pass the text field as text_key."
    )


def tfds_documents(
  name: str, split: str, data_dir: str | None = None, text_key: str = "text"
) -> TfdsDocuments:
  """A prepared tfds text dataset (lm1b, c4/en, wiki40b/en, ...) as documents."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets.text  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

  try:
    # download=False: preparing c4 needs TensorFlow/Beam and days; do it apart.
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
      f"tfds has no dataset {name!r} (even after importing "
      "tensorflow_datasets.text); check the name with `tfds.list_builders()`."
    ) from e
  except Exception as e:  # not prepared, TFRecord-only, wrong split, ...
    raise FileNotFoundError(
      f"Cannot open tfds {name}/{split} in data_dir={data_dir!r} ({type(e).__name__}: "
      f"{' '.join(str(e).split())[:300]}). It must be prepared there in the "
      "array_record format: on a "
      f"machine with the data, `tfds build {name} --file_format=array_record "
      "--data_dir=DIR`, then pass data_dir=DIR."
    ) from e
  return TfdsDocuments(source, name, split, text_key)


def tfds_split_names(name: str, data_dir: str | None = None) -> list[str]:
  """The splits a prepared dataset's dataset_info records; [] when unknown (not
  prepared, or under tfds.testing.mock_data, which records none)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets.text  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

  try:
    return list(tfds.builder(name, data_dir=data_dir).info.splits)
  except Exception:  # noqa: BLE001  unknown name, no metadata: tfds_documents says why
    return []


def tfds_token_stream(
  documents, tokenizer, seq_len: int, seed: int = 0, shuffle: bool = True
) -> grain.IterDataset:
  """Infinite packed windows: documents shuffled per epoch, tokenized, each
  followed by EOT, concatenated and cut into seq_len + 1 tokens (grain's
  ConcatThenSplit, whose state checkpoints and restores exactly)."""
  if len(documents) == 0:
    raise ValueError("tfds_token_stream got no documents.")
  eot = np.asarray([tokenizer.eot_id], np.int32)
  ds = grain.MapDataset.source(documents)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat().map(lambda text: {"tokens": np.concatenate([tokenizer.encode(text), eot])})
  ds = grain.experimental.ConcatThenSplitIterDataset(
    ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=16)),
    length_struct={"tokens": seq_len + 1},
  )
  # Drop ConcatThenSplit's positions/segment ids: windows run across documents
  # (nanoGPT-style), and the model sees the EOT between them.
  return ds.map(
    lambda ex: {
      "inputs": np.asarray(ex["tokens"][:-1], np.int32),
      "targets": np.asarray(ex["tokens"][1:], np.int32),
    }
  )
