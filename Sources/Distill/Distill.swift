/// distill: knowledge distillation of Llama-style language models, in Swift.
public enum DistillVersion {
    public static let string = "0.1.0"
}
