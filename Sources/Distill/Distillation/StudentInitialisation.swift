/// DistilBERT-style initialisation: a student of the teacher's shape but fewer blocks takes every k-th
/// teacher block (k = teacher depth / student depth), with the embedding, final norm and head copied.
public func studentFromTeacher(_ teacher: LlamaModel, layers: Int) throws -> LlamaModel {
    guard layers >= 1 && layers <= teacher.config.numHiddenLayers else {
        throw SettingError(.initFromTeacher, "needs a student of 1 to \(teacher.config.numHiddenLayers) blocks (the teacher's depth), got \(layers)")
    }
    var config = teacher.config
    config.numHiddenLayers = layers
    let student = try LlamaModel(config: config, seed: 0)
    let step = teacher.config.numHiddenLayers / layers
    for tensor in student.layout.tensors {
        // Block i of the student is block i·k of the teacher; all other tensors keep their names.
        var name = tensor.name
        if name.hasPrefix("model.layers."), let index = Int(name.split(separator: ".")[2]) {
            name = name.replacingOccurrences(of: "model.layers.\(index).", with: "model.layers.\(index * step).")
        }
        guard let source = teacher.layout.tensor(named: name) else { continue }
        (student.parameters.baseAddress! + tensor.offset)
            .update(from: teacher.parameters.baseAddress! + source.offset, count: tensor.count)
    }
    return student
}

import Foundation
