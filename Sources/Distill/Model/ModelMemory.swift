import Foundation

// Sizes are estimated before anything is allocated, so that an absurd config (hidden_size 10^7,
// num_hidden_layers 10^6) is refused in a sentence instead of aborting in the allocator. All size
// arithmetic here saturates at Int.max instead of trapping on overflow.

/// What a model is made for, which decides the memory it needs beside its weights.
public enum ModelUse: Sendable {
    /// Weights only (sampling, evaluation, export, a teacher).
    case inference
    /// Weights, their gradients and AdamW's two moments: four floats per weight.
    case training

    var floatsPerWeight: Int { self == .training ? 4 : 1 }
    var what: String { self == .training ? "weights, gradients and optimizer state" : "weights" }
}

/// The machine's memory, for refusing what cannot fit before allocating it.
public enum MachineMemory {
    /// Physical memory, in bytes.
    public static var physicalBytes: Double { Double(ProcessInfo.processInfo.physicalMemory) }
    /// The share of physical memory a run may plan to use; the rest is left to the system and the data.
    public static let usableFraction = 0.8

    /// A byte count for people: "24 GB", "4.1 TB".
    public static func describe(_ bytes: Double) -> String {
        let units = ["bytes", "KB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
        var value = bytes, unit = 0
        while value >= 1000 && unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return unit == 0 ? "\(Int(value)) bytes" : String(format: value < 10 ? "%.1f %@" : "%.0f %@", value, units[unit])
    }
}

extension LlamaConfig {
    /// Number of weights (a tied head counted once), as the tensor table lists them; Int.max when the
    /// sizes overflow.
    public var parameterCountEstimate: Int {
        Self.parameterCount(width: hiddenSize, hidden: intermediateSize, layers: numHiddenLayers, vocab: vocabSize,
                            heads: numAttentionHeads, kvHeads: numKeyValueHeads, tied: tieWordEmbeddings)
    }

    private static func parameterCount(width c: Int, hidden f: Int, layers: Int, vocab: Int, heads: Int, kvHeads: Int,
                                       tied: Bool) -> Int {
        let kvWidth = saturatingProduct(c / max(heads, 1), kvHeads)
        let block = saturatingSum([saturatingProduct(2, c), saturatingProduct(2, c, c), saturatingProduct(2, c, kvWidth), saturatingProduct(3, c, f)])
        let embedding = saturatingProduct(vocab, c)
        return saturatingSum([embedding, saturatingProduct(layers, block), c, tied ? 0 : embedding])
    }

    /// Refuses, in one line naming the field, a config whose weights (and for training their gradients
    /// and optimizer state) need more than `MachineMemory.usableFraction` of `availableBytes`. Call it
    /// before allocating; `LlamaModel`'s initialisers do.
    public func checkMemory(for use: ModelUse, availableBytes: Double = MachineMemory.physicalBytes) throws {
        let limit = MachineMemory.usableFraction * availableBytes
        func bytes(_ count: Int) -> Double { Double(count) * Double(use.floatsPerWeight) * Double(MemoryLayout<Float>.size) }
        let needed = bytes(parameterCountEstimate)
        guard needed > limit else { return }
        let amount = (parameterCountEstimate == Int.max ? "more than " : "about ") + MachineMemory.describe(needed)
        let machine = MachineMemory.describe(availableBytes)
        // Name the field that, brought down to a small model's value, would shrink the model the most;
        // when no single field is to blame, list them all.
        let fields: [(name: String, value: Int, count: Int)] = [
            ("hidden_size", hiddenSize, Self.parameterCount(width: min(hiddenSize, 256), hidden: intermediateSize, layers: numHiddenLayers,
                                                            vocab: vocabSize, heads: numAttentionHeads, kvHeads: numKeyValueHeads, tied: tieWordEmbeddings)),
            ("intermediate_size", intermediateSize, Self.parameterCount(width: hiddenSize, hidden: min(intermediateSize, 1024), layers: numHiddenLayers,
                                                                        vocab: vocabSize, heads: numAttentionHeads, kvHeads: numKeyValueHeads, tied: tieWordEmbeddings)),
            ("num_hidden_layers", numHiddenLayers, Self.parameterCount(width: hiddenSize, hidden: intermediateSize, layers: min(numHiddenLayers, 8),
                                                                       vocab: vocabSize, heads: numAttentionHeads, kvHeads: numKeyValueHeads, tied: tieWordEmbeddings)),
            ("vocab_size", vocabSize, Self.parameterCount(width: hiddenSize, hidden: intermediateSize, layers: numHiddenLayers,
                                                          vocab: min(vocabSize, 32000), heads: numAttentionHeads, kvHeads: numKeyValueHeads, tied: tieWordEmbeddings)),
        ]
        let culprit = fields.min { $0.count < $1.count }
        if let culprit, bytes(culprit.count) <= limit {
            throw ModelError.invalidConfig("\(culprit.name) \(culprit.value) needs \(amount) of \(use.what); this machine has \(machine)")
        }
        let sizes = fields.map { "\($0.name) \($0.value)" }.joined(separator: ", ")
        throw ModelError.invalidConfig("this model (\(sizes)) needs \(amount) of \(use.what); this machine has \(machine)")
    }
}

extension LlamaConfig {
    /// Refuses, naming the batch size, a training batch of `batch` × `context` tokens whose activations
    /// (what a forward pass keeps for backward, from the same size table the buffers are allocated from)
    /// need more than `MachineMemory.usableFraction` of `availableBytes`: a context or batch far beyond
    /// the machine fails in a sentence before any work, not in the allocator. `recomputingGateUp`: the
    /// smaller buffers of `LlamaModel.recomputesGateUp`; `firstBlocksRecomputingGateUp`: the model's
    /// `LlamaModel.firstBlocksRecomputingGateUp`.
    public func checkTrainingActivations(batch: Int, context: Int, recomputingGateUp: Bool = false,
                                         firstBlocksRecomputingGateUp: Int = LlamaModel.defaultGateUpRecomputedBlocks,
                                         availableBytes: Double = MachineMemory.physicalBytes) throws {
        let blocks = LlamaModel.gateUpRecomputedBlocks(layers: numHiddenLayers, all: recomputingGateUp, first: firstBlocksRecomputingGateUp)
        let needed = Double(ActivationSizes(config: self, batch: batch, length: context, perBlock: true, threads: Compute.threads,
                                            gateUpRecomputedBlocks: blocks).bytes)
        guard needed >= MachineMemory.usableFraction * availableBytes else { return }
        // Counts by interpolation: String(format: "%d") takes 32 bits and printed a context of 2^40 as 0.
        throw SettingError(.batchSize, "is \(batch); a batch of \(batch) × \(context) tokens needs about \(MachineMemory.describe(needed)) "
                           + "of activations but this machine has \(MachineMemory.describe(availableBytes)): lower the batch size or the context"
                           + (recomputingGateUp ? "" : ", or recompute activations in backward"))
    }
}

