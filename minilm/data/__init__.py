"""Data for language models: tokenizers, corpora, the token cache, batches, loaders.

A typical pipeline (docs/tokenizer.md explains the tokenizers)::

    from minilm.data import *
    text = load_corpus()                                   # built-in corpus
    tok = ByteBPETokenizer.train(text, vocab_size=512)
    tokens = encode_to_memmap(tok, text, "cache/corpus.bin")
    train, val = split_tokens(tokens, 0.1)
    loader = DataLoader(RandomWindowBatches(train, 16, 128, rng=0), prefetch=2)
    x, y = next(iter(loader))                              # int64 Tensors (16, 128)
"""

from .augment import (
    SYNONYMS,
    AugmentedDataset,
    Compose,
    EmbeddingNeighbours,
    EmbeddingNoise,
    RandomDeletion,
    RandomInsertion,
    RandomSwap,
    SynonymReplacement,
    embedding_noise,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from .batches import (
    DatasetBatches,
    RandomWindowBatches,
    make_rng,
    rng_state,
    sequential_batches,
    set_rng_state,
)
from .bbc import BBCNews, duplicate_groups, kfold_splits, load_bbc_news, stratified_split
from .bpe import DEFAULT_PATTERN, ByteBPETokenizer, pretokenize, train_merges
from .corpus import CORPUS_SUFFIXES, builtin_corpus, corpus_files, load_corpus
from .dates import (
    DATE_FORMATS,
    CharVocab,
    date_pairs,
    date_splits,
    date_vocabularies,
    encode_pairs,
    format_date,
)
from .loader import DataLoader
from .masking import DynamicMasking, mask_tokens, word_start_table
from .sampler import DistributedSampler
from .text import (
    CSRMatrix,
    DuplicateReport,
    MinHash,
    TfidfVectorizer,
    Vocab,
    bucket_batches,
    clean_text,
    duplicate_report,
    find_exact_duplicates,
    find_near_duplicates,
    jaccard,
    lsh_candidate_pairs,
    pad_sequences,
    shingles,
    text_hash,
    tokenize,
)
from .token_cache import TokenFile, encode_to_memmap, text_digest, token_dtype
from .tokenizer import CharTokenizer, Tokenizer, load_tokenizer, register_tokenizer, tokenizer_from_dict
from .windows import WindowDataset, iter_windows, num_windows, random_windows, split_tokens
from .wordpiece import WordPieceTokenizer, basic_tokenize

__all__ = [
    "CORPUS_SUFFIXES", "DEFAULT_PATTERN", "ByteBPETokenizer", "CharTokenizer", "DataLoader",
    "DatasetBatches", "DistributedSampler", "RandomWindowBatches", "TokenFile", "Tokenizer",
    "WindowDataset", "builtin_corpus", "corpus_files", "encode_to_memmap", "iter_windows",
    "load_corpus", "load_tokenizer", "make_rng", "num_windows", "pretokenize", "random_windows",
    "register_tokenizer", "rng_state", "sequential_batches", "set_rng_state", "split_tokens",
    "text_digest", "token_dtype", "tokenizer_from_dict", "train_merges",
    # text classification (docs/classification.md)
    "SYNONYMS", "AugmentedDataset", "BBCNews", "CSRMatrix", "Compose", "DuplicateReport",
    "EmbeddingNeighbours", "EmbeddingNoise", "MinHash", "RandomDeletion", "RandomInsertion",
    "RandomSwap", "SynonymReplacement", "TfidfVectorizer", "Vocab", "bucket_batches",
    "clean_text", "duplicate_groups", "duplicate_report", "embedding_noise", "find_exact_duplicates",
    "find_near_duplicates", "jaccard", "kfold_splits", "load_bbc_news", "lsh_candidate_pairs",
    "pad_sequences", "random_deletion", "random_insertion", "random_swap", "shingles",
    "stratified_split", "synonym_replacement", "text_hash", "tokenize",
    # the date-normalisation seq2seq task (docs/seq2seq.md)
    "DATE_FORMATS", "CharVocab", "date_pairs", "date_splits", "date_vocabularies",
    "encode_pairs", "format_date",
    # BERT's tokenizer (docs/tokenizer.md)
    "WordPieceTokenizer", "basic_tokenize",
    # masked-language-model inputs (docs/pretrained.md)
    "DynamicMasking", "mask_tokens", "word_start_table",
]
