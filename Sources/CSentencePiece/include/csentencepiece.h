#ifndef CSENTENCEPIECE_H
#define CSENTENCEPIECE_H

// A plain C interface over SentencePiece's C++ processor and trainer, because Swift's C++ interop
// cannot import sentencepiece::SentencePieceProcessor. Nothing here throws or aborts: failures come
// back as a message string that the caller owns and frees with spm_free_string.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// An opaque handle on a loaded SentencePiece model. Every function that reads it is safe to call
/// from several threads at once.
typedef struct spm_processor spm_processor;

/// Kinds of vocabulary entry, mirroring SentencePiece's ModelProto.SentencePiece.Type.
typedef enum {
    SPM_PIECE_NORMAL = 1,
    SPM_PIECE_UNKNOWN = 2,
    SPM_PIECE_CONTROL = 3,
    SPM_PIECE_USER_DEFINED = 4,
    SPM_PIECE_UNUSED = 5,
    SPM_PIECE_BYTE = 6,
} spm_piece_type;

/// Frees a string returned by this library (an error message, a trainer log, a decoded text).
void spm_free_string(char *string);

/// Loads a model file. Returns NULL and sets *error (to be freed) on failure.
spm_processor *spm_processor_load(const char *path, char **error);

/// Frees a processor; NULL is allowed.
void spm_processor_free(spm_processor *processor);

/// Number of entries in the vocabulary.
int32_t spm_vocab_size(const spm_processor *processor);
/// Reserved ids; -1 when the model does not define one.
int32_t spm_unk_id(const spm_processor *processor);
int32_t spm_bos_id(const spm_processor *processor);
int32_t spm_eos_id(const spm_processor *processor);
int32_t spm_pad_id(const spm_processor *processor);
/// 1 when encoding puts a space before the text (NormalizerSpec.add_dummy_prefix), else 0.
int spm_adds_dummy_prefix(const spm_processor *processor);

/// The piece text of `id` (not owned by the caller, valid while the processor lives), or NULL when
/// `id` is out of range. Its byte length is stored in *length.
const char *spm_piece(const spm_processor *processor, int32_t id, size_t *length);
/// The score of `id`, or 0 when out of range.
float spm_score(const spm_processor *processor, int32_t id);
/// The spm_piece_type of `id`, or 0 when out of range.
int32_t spm_piece_type_of(const spm_processor *processor, int32_t id);

/// Encodes `length` bytes of UTF-8 text into ids. Writes at most `capacity` ids into `ids` and returns
/// how many the text needs (call again with a larger buffer when that exceeds `capacity`; `length`
/// ids always suffice for non-empty text). Returns -1 and sets *error on failure.
int64_t spm_encode(const spm_processor *processor, const char *text, size_t length,
                   int32_t *ids, size_t capacity, char **error);

/// Decodes ids into text. Returns the text (to be freed; it may contain NUL bytes, so use *length)
/// or NULL with *error set, e.g. for an id out of range.
char *spm_decode(const spm_processor *processor, const int32_t *ids, size_t count,
                 size_t *length, char **error);

/// Trains a model with SentencePiece's command-line style `arguments` (space-separated
/// --key=value, no --input), reading sentences line by line from the `path_count` files in `paths`.
/// Lines longer than `max_sentence_bytes` (which must equal --max_sentence_length, beyond which
/// SentencePiece drops a sentence) are handed over in pieces of at most that many bytes, and counted
/// in *split_lines. The model bytes are returned in *model (to be freed, length in *model_length);
/// nothing is written to disk. The trainer's log is captured into *log instead of the process's
/// stderr. Returns 0 on success, or -1 with *error set to SentencePiece's message.
int spm_train(const char *arguments, const char *const *paths, size_t path_count, size_t max_sentence_bytes,
              char **model, size_t *model_length, size_t *split_lines, char **log, char **error);

#ifdef __cplusplus
}
#endif

#endif
