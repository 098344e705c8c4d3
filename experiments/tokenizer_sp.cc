// The SentencePiece shim: the only C++ in the project. It wraps sentencepiece_processor.h and
// sentencepiece_trainer.h (Debian libsentencepiece-dev) behind the C API of tokenizer.h, turns
// every failure into hy_fail with the file named, and never lets an exception cross into C.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unistd.h>
#include <vector>

extern "C" {
#include "core/error.h"
#include "core/fileio.h"
#include "core/sha256.h"
#include "experiments/tokenizer.h"
}

struct hy_tokenizer {
    sentencepiece::SentencePieceProcessor sp;
    std::string path;
    char sha256[65];
};

// Every entry point catches what the library or the allocator may throw.
#define SHIM_GUARD_BEGIN try {
#define SHIM_GUARD_END(who)                                                                       \
    }                                                                                             \
    catch (const std::exception &ex) {                                                            \
        return hy_fail("%s: %s", who, ex.what());                                                 \
    }                                                                                             \
    catch (...) {                                                                                 \
        return hy_fail("%s: unexpected failure in SentencePiece", who);                           \
    }

extern "C" int hy_tokenizer_load(const char *path, hy_tokenizer **out) {
    *out = nullptr;
    SHIM_GUARD_BEGIN
    char hex[65];
    int rc = hy_sha256_file(path, hex);
    if (rc < 0) return rc;
    hy_tokenizer *t = new hy_tokenizer;
    auto st = t->sp.Load(path);
    if (!st.ok()) {
        delete t;
        return hy_fail_code(HY_ERR_IO, "%s: not a SentencePiece model: %s", path, st.ToString().c_str());
    }
    t->path = path;
    memcpy(t->sha256, hex, sizeof hex);
    *out = t;
    return 0;
    SHIM_GUARD_END(path)
}

extern "C" void hy_tokenizer_free(hy_tokenizer *t) { delete t; }
extern "C" int hy_tokenizer_vocab(const hy_tokenizer *t) { return t->sp.GetPieceSize(); }
extern "C" const char *hy_tokenizer_sha256(const hy_tokenizer *t) { return t->sha256; }
extern "C" const char *hy_tokenizer_path(const hy_tokenizer *t) { return t->path.c_str(); }

extern "C" int hy_tokenizer_encode(const hy_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n) {
    *ids = nullptr, *n = 0;
    SHIM_GUARD_BEGIN
    std::vector<int> v;
    auto st = t->sp.Encode(std::string_view(text, len), &v);
    if (!st.ok()) return hy_fail("%s: encoding failed: %s", t->path.c_str(), st.ToString().c_str());
    int32_t *out = static_cast<int32_t *>(malloc(sizeof(int32_t) * (v.size() + 1)));
    if (!out) return hy_fail_code(HY_ERR_NOMEM, "%s: out of memory for %zu tokens", t->path.c_str(), v.size());
    for (size_t i = 0; i < v.size(); i++) out[i] = v[i];
    *ids = out, *n = v.size();
    return 0;
    SHIM_GUARD_END(t->path.c_str())
}

extern "C" int hy_tokenizer_piece(const hy_tokenizer *t, int id, char *out, size_t cap) {
    SHIM_GUARD_BEGIN
    if (id < 0 || id >= t->sp.GetPieceSize())
        return hy_fail("%s: token %d is outside the vocabulary of %d", t->path.c_str(), id, t->sp.GetPieceSize());
    std::string bytes;
    const std::string &piece = t->sp.IdToPiece(id);
    if (t->sp.IsByte(id)) bytes.push_back(static_cast<char>(strtol(piece.c_str() + 3, nullptr, 16)));   // <0xNN>
    else if (!t->sp.IsControl(id) && !t->sp.IsUnknown(id)) {
        static const std::string space = "\xe2\x96\x81";   // U+2581, SentencePiece's escaped space
        for (size_t i = 0; i < piece.size();)
            if (piece.compare(i, space.size(), space) == 0) bytes.push_back(' '), i += space.size();
            else bytes.push_back(piece[i++]);
    }
    memcpy(out, bytes.data(), bytes.size() < cap ? bytes.size() : cap);
    return static_cast<int>(bytes.size());
    SHIM_GUARD_END(t->path.c_str())
}

extern "C" int hy_tokenizer_decode(const hy_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len) {
    *text = nullptr, *len = 0;
    SHIM_GUARD_BEGIN
    std::vector<int> v(ids, ids + n);
    for (int id : v)
        if (id < 0 || id >= t->sp.GetPieceSize())
            return hy_fail("%s: token %d is outside the vocabulary of %d", t->path.c_str(), id, t->sp.GetPieceSize());
    std::string s;
    auto st = t->sp.Decode(v, &s);
    if (!st.ok()) return hy_fail("%s: decoding failed: %s", t->path.c_str(), st.ToString().c_str());
    char *out = static_cast<char *>(malloc(s.size() + 1));
    if (!out) return hy_fail_code(HY_ERR_NOMEM, "%s: out of memory", t->path.c_str());
    memcpy(out, s.data(), s.size());
    out[s.size()] = 0;
    *text = out, *len = s.size();
    return 0;
    SHIM_GUARD_END(t->path.c_str())
}

// The training sentences: every non-empty line of every text, in order.
class line_iterator : public sentencepiece::SentenceIterator {
  public:
    line_iterator(const char *const *text, const size_t *len, int n) : text_(text), len_(len), n_(n) { Next(); }
    bool done() const override { return done_; }
    const std::string &value() const override { return line_; }
    sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }
    void Next() override {
        for (;;) {
            if (file_ >= n_) {
                done_ = true;
                return;
            }
            const char *p = text_[file_] + at_, *end = text_[file_] + len_[file_];
            if (p >= end) {
                file_++, at_ = 0;
                continue;
            }
            const char *nl = static_cast<const char *>(memchr(p, '\n', static_cast<size_t>(end - p)));
            size_t take = nl ? static_cast<size_t>(nl - p) : static_cast<size_t>(end - p);
            at_ += take + (nl ? 1 : 0);
            if (take == 0) continue;
            line_.assign(p, take);
            return;
        }
    }

  private:
    const char *const *text_;
    const size_t *len_;
    int n_, file_ = 0;
    size_t at_ = 0;
    bool done_ = false;
    std::string line_;
};

extern "C" int hy_tokenizer_train(const char *const *text, const size_t *len, int n, const hy_tokenizer_train_opts *o,
                                  const char *out_path) {
    SHIM_GUARD_BEGIN
    std::string type = o->type ? o->type : "bpe";
    if (type != "bpe" && type != "unigram") return hy_fail("tokenizer type '%s': must be bpe or unigram", type.c_str());
    // Keep the text exactly (identity normalization, no dummy prefix, whitespace kept, byte
    // fallback), and let runs of spaces (indentation) become pieces of their own.
    int threads = o->threads > 0 ? o->threads : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
    std::unordered_map<std::string, std::string> args = {
        {"model_type", type},
        {"vocab_size", std::to_string(o->vocab)},
        {"normalization_rule_name", "identity"},
        {"add_dummy_prefix", "false"},
        {"remove_extra_whitespaces", "false"},
        {"allow_whitespace_only_pieces", "true"},
        {"byte_fallback", "true"},
        {"split_digits", "true"},
        {"character_coverage", "0.9999"},
        {"max_sentence_length", "16384"},
        {"minloglevel", "2"},
        {"num_threads", std::to_string(threads)},
    };
    if (o->max_sentences > 0) {
        args["input_sentence_size"] = std::to_string(o->max_sentences);
        args["shuffle_input_sentence"] = "true";
    }
    line_iterator it(text, len, n);
    std::string model;
    auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
    if (!st.ok()) return hy_fail("%s: training the tokenizer failed: %s", out_path, st.ToString().c_str());
    return hy_write_file_atomic(out_path, model.data(), model.size());
    SHIM_GUARD_END(out_path)
}
