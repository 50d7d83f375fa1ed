// extern "C" shim over SentencePiece (Debian's libsentencepiece 0.1.x). See csentencepiece.h.

#include "csentencepiece.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <vector>

struct spm_processor {
    sentencepiece::SentencePieceProcessor processor;
    // Piece types read from the model proto, since the public API has no IsUserDefined/IsNormal.
    std::vector<uint8_t> types;
    // NormalizerSpec.add_dummy_prefix: whether encoding puts a space before the text.
    bool adds_dummy_prefix = true;
};

namespace {

// Returns a malloc'd copy that C and Swift callers free with spm_free_string; NULL only when out of
// memory, which callers treat as "no message".
char *copy_string(const std::string &text) {
    char *copy = static_cast<char *>(std::malloc(text.size() + 1));
    if (copy == nullptr) return nullptr;
    std::memcpy(copy, text.data(), text.size());
    copy[text.size()] = '\0';
    return copy;
}

void set_error(char **error, const std::string &message) {
    if (error != nullptr) *error = copy_string(message);
}

// A minimal protobuf reader: just enough to walk ModelProto.pieces (field 1) and read each piece's
// type (field 3), without the generated sentencepiece_model.pb.h, which Debian does not ship.
struct ProtoReader {
    const uint8_t *position;
    const uint8_t *end;

    bool varint(uint64_t *value) {
        uint64_t result = 0;
        for (int shift = 0; shift < 64 && position < end; shift += 7) {
            uint8_t byte = *position++;
            result |= uint64_t(byte & 0x7F) << shift;
            if ((byte & 0x80) == 0) { *value = result; return true; }
        }
        return false;
    }

    // Reads one field: a varint field's value goes to `value`, a length-delimited one's bytes to
    // `payload`; fixed-size fields are skipped.
    bool field(uint32_t *number, uint32_t *wire, uint64_t *value, ProtoReader *payload) {
        uint64_t key = 0, length = 0;
        if (!varint(&key)) return false;
        *number = uint32_t(key >> 3);
        *wire = uint32_t(key & 7);
        switch (*wire) {
            case 0: return varint(value);
            case 1: if (end - position < 8) return false; position += 8; return true;
            case 5: if (end - position < 4) return false; position += 4; return true;
            case 2:
                if (!varint(&length) || uint64_t(end - position) < length) return false;
                *payload = ProtoReader{position, position + length};
                position += length;
                return true;
            default: return false;
        }
    }
};

std::vector<uint8_t> read_piece_types(const std::string &serialized) {
    std::vector<uint8_t> types;
    const uint8_t *bytes = reinterpret_cast<const uint8_t *>(serialized.data());
    ProtoReader model{bytes, bytes + serialized.size()};
    uint32_t number = 0, wire = 0;
    uint64_t value = 0;
    ProtoReader piece{nullptr, nullptr};
    while (model.position < model.end && model.field(&number, &wire, &value, &piece)) {
        if (number != 1 || wire != 2) continue;
        uint8_t type = SPM_PIECE_NORMAL;  // proto default when the field is absent
        uint32_t inner_number = 0, inner_wire = 0;
        uint64_t inner_value = 0;
        ProtoReader unused{nullptr, nullptr};
        while (piece.position < piece.end && piece.field(&inner_number, &inner_wire, &inner_value, &unused)) {
            if (inner_number == 3 && inner_wire == 0) type = uint8_t(inner_value);
        }
        types.push_back(type);
    }
    return types;
}

// NormalizerSpec (ModelProto field 3) field 3, add_dummy_prefix; true, the proto default, when absent.
bool read_adds_dummy_prefix(const std::string &serialized) {
    const uint8_t *bytes = reinterpret_cast<const uint8_t *>(serialized.data());
    ProtoReader model{bytes, bytes + serialized.size()};
    uint32_t number = 0, wire = 0;
    uint64_t value = 0;
    ProtoReader spec{nullptr, nullptr};
    bool adds = true;
    while (model.position < model.end && model.field(&number, &wire, &value, &spec)) {
        if (number != 3 || wire != 2) continue;
        uint32_t inner_number = 0, inner_wire = 0;
        uint64_t inner_value = 0;
        ProtoReader unused{nullptr, nullptr};
        while (spec.position < spec.end && spec.field(&inner_number, &inner_wire, &inner_value, &unused)) {
            if (inner_number == 3 && inner_wire == 0) adds = inner_value != 0;
        }
    }
    return adds;
}

bool valid_id(const spm_processor *processor, int32_t id) {
    return processor != nullptr && id >= 0 && id < processor->processor.GetPieceSize();
}

// Feeds the trainer the lines of several files, so that paths never pass through SentencePiece's
// comma- and space-separated argument syntax. SentencePiece skips sentences longer than its
// max_sentence_length without a word, so a longer line is handed over in pieces of at most
// `max_piece_bytes`, cut after a space when there is one near the limit and never inside a UTF-8
// character; `split_lines()` counts the lines cut this way.
class FileLineIterator : public sentencepiece::SentenceIterator {
   public:
    FileLineIterator(std::vector<std::string> paths, size_t max_piece_bytes)
        : paths_(std::move(paths)), max_piece_bytes_(max_piece_bytes < 8 ? 8 : max_piece_bytes) { Next(); }

    bool done() const override { return done_; }
    const std::string &value() const override { return piece_; }
    sentencepiece::util::Status status() const override { return status_; }
    size_t split_lines() const { return split_lines_; }

    void Next() override {
        if (rest_ < line_.size()) { TakePiece(); return; }
        while (!done_) {
            if (stream_.is_open() && std::getline(stream_, line_)) {
                rest_ = 0;
                if (line_.size() > max_piece_bytes_) ++split_lines_;
                TakePiece();
                return;
            }
            if (stream_.is_open() && stream_.bad()) {
                fail("cannot read " + paths_[next_path_ - 1]);
                return;
            }
            stream_.close();
            stream_.clear();
            if (next_path_ == paths_.size()) { done_ = true; return; }
            const std::string &path = paths_[next_path_++];
            stream_.open(path, std::ios::in | std::ios::binary);
            if (!stream_.is_open()) { fail("cannot open " + path); return; }
        }
    }

   private:
    // Moves the next piece of line_ (from rest_) into piece_.
    void TakePiece() {
        size_t remaining = line_.size() - rest_;
        size_t length = remaining;
        if (remaining > max_piece_bytes_) {
            length = max_piece_bytes_;
            // Back up to the start of a UTF-8 character (continuation bytes are 10xxxxxx).
            while (length > 1 && (static_cast<unsigned char>(line_[rest_ + length]) & 0xC0) == 0x80) --length;
            // Prefer to cut just after a space in the last quarter of the piece.
            for (size_t cut = length; cut > max_piece_bytes_ * 3 / 4; --cut) {
                if (line_[rest_ + cut - 1] == ' ') { length = cut; break; }
            }
        }
        piece_.assign(line_, rest_, length);
        rest_ += length;
    }

    void fail(const std::string &message) {
        status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kNotFound, message);
        done_ = true;
    }

    std::vector<std::string> paths_;
    size_t max_piece_bytes_;
    size_t next_path_ = 0;
    std::ifstream stream_;
    std::string line_;
    size_t rest_ = 0;
    std::string piece_;
    size_t split_lines_ = 0;
    bool done_ = false;
    sentencepiece::util::Status status_;
};

// SentencePiece logs through std::cerr; while it trains, that stream writes into a buffer instead.
// The trainer also keeps global state, so one training runs at a time.
std::mutex train_mutex;

class StderrCapture {
   public:
    StderrCapture() : saved_(std::cerr.rdbuf(buffer_.rdbuf())) {}
    ~StderrCapture() { std::cerr.rdbuf(saved_); }
    std::string text() const { return buffer_.str(); }

   private:
    std::ostringstream buffer_;
    std::streambuf *saved_;
};

}  // namespace

extern "C" {

void spm_free_string(char *string) { std::free(string); }

spm_processor *spm_processor_load(const char *path, char **error) {
    try {
        std::unique_ptr<spm_processor> handle(new spm_processor());
        sentencepiece::util::Status status = handle->processor.Load(path);
        if (!status.ok()) {
            set_error(error, status.ToString());
            return nullptr;
        }
        const std::string serialized = handle->processor.serialized_model_proto();
        handle->types = read_piece_types(serialized);
        handle->adds_dummy_prefix = read_adds_dummy_prefix(serialized);
        if (int(handle->types.size()) != handle->processor.GetPieceSize()) {
            set_error(error, "the model's piece list could not be read");
            return nullptr;
        }
        return handle.release();
    } catch (const std::exception &exception) {
        set_error(error, exception.what());
        return nullptr;
    }
}

void spm_processor_free(spm_processor *processor) { delete processor; }

int32_t spm_vocab_size(const spm_processor *processor) { return processor->processor.GetPieceSize(); }
int32_t spm_unk_id(const spm_processor *processor) { return processor->processor.unk_id(); }
int32_t spm_bos_id(const spm_processor *processor) { return processor->processor.bos_id(); }
int32_t spm_eos_id(const spm_processor *processor) { return processor->processor.eos_id(); }
int32_t spm_pad_id(const spm_processor *processor) { return processor->processor.pad_id(); }
int spm_adds_dummy_prefix(const spm_processor *processor) { return processor->adds_dummy_prefix ? 1 : 0; }

const char *spm_piece(const spm_processor *processor, int32_t id, size_t *length) {
    if (!valid_id(processor, id)) return nullptr;
    const std::string &piece = processor->processor.IdToPiece(id);
    *length = piece.size();
    return piece.data();
}

float spm_score(const spm_processor *processor, int32_t id) {
    return valid_id(processor, id) ? processor->processor.GetScore(id) : 0.0f;
}

int32_t spm_piece_type_of(const spm_processor *processor, int32_t id) {
    return valid_id(processor, id) ? processor->types[size_t(id)] : 0;
}

int64_t spm_encode(const spm_processor *processor, const char *text, size_t length,
                   int32_t *ids, size_t capacity, char **error) {
    try {
        std::vector<int> encoded;
        sentencepiece::util::Status status =
            processor->processor.Encode(std::string_view(text, length), &encoded);
        if (!status.ok()) {
            set_error(error, status.ToString());
            return -1;
        }
        size_t count = encoded.size() < capacity ? encoded.size() : capacity;
        for (size_t index = 0; index < count; ++index) ids[index] = int32_t(encoded[index]);
        return int64_t(encoded.size());
    } catch (const std::exception &exception) {
        set_error(error, exception.what());
        return -1;
    }
}

char *spm_decode(const spm_processor *processor, const int32_t *ids, size_t count,
                 size_t *length, char **error) {
    try {
        std::vector<int> pieces(count);
        for (size_t index = 0; index < count; ++index) {
            // Out-of-range ids would index past the piece table inside SentencePiece.
            if (!valid_id(processor, ids[index])) {
                set_error(error, "token id " + std::to_string(ids[index]) + " is outside the vocabulary (0..<" +
                                     std::to_string(processor->processor.GetPieceSize()) + ")");
                return nullptr;
            }
            pieces[index] = ids[index];
        }
        std::string text;
        sentencepiece::util::Status status = processor->processor.Decode(pieces, &text);
        if (!status.ok()) {
            set_error(error, status.ToString());
            return nullptr;
        }
        *length = text.size();
        char *result = copy_string(text);
        if (result == nullptr) set_error(error, "out of memory");
        return result;
    } catch (const std::exception &exception) {
        set_error(error, exception.what());
        return nullptr;
    }
}

int spm_train(const char *arguments, const char *const *paths, size_t path_count, size_t max_sentence_bytes,
              char **model, size_t *model_length, size_t *split_lines, char **log, char **error) {
    std::lock_guard<std::mutex> lock(train_mutex);
    try {
        std::string serialized;
        sentencepiece::util::Status status;
        std::string captured;
        {
            StderrCapture capture;
            FileLineIterator lines(std::vector<std::string>(paths, paths + path_count), max_sentence_bytes);
            status = sentencepiece::SentencePieceTrainer::Train(arguments, &lines, &serialized);
            if (status.ok()) status = lines.status();
            if (split_lines != nullptr) *split_lines = lines.split_lines();
            captured = capture.text();
        }
        if (log != nullptr) *log = copy_string(captured);
        if (!status.ok()) {
            set_error(error, status.ToString());
            return -1;
        }
        *model = static_cast<char *>(std::malloc(serialized.size() + 1));
        if (*model == nullptr) {
            set_error(error, "out of memory");
            return -1;
        }
        std::memcpy(*model, serialized.data(), serialized.size());
        *model_length = serialized.size();
        return 0;
    } catch (const std::exception &exception) {
        set_error(error, exception.what());
        return -1;
    }
}

}  // extern "C"
