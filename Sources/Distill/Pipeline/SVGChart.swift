import Foundation

/// One named line of a chart: points in data coordinates, in order of x.
public struct ChartSeries: Sendable, Equatable {
    public var name: String
    public var points: [ChartPoint]
    /// Index into the palette (nil: the series' position).
    public var colour: Int?

    public init(name: String, points: [ChartPoint], colour: Int? = nil) {
        self.name = name
        self.points = points
        self.colour = colour
    }
}

public struct ChartPoint: Sendable, Equatable {
    public var x: Double
    public var y: Double

    public init(x: Double, y: Double) {
        self.x = x
        self.y = y
    }
}

/// One bar of a bar chart.
public struct ChartBar: Sendable, Equatable {
    public var label: String
    public var value: Double
    /// Index into the palette (nil: the bar's position).
    public var colour: Int?

    public init(label: String, value: Double, colour: Int? = nil) {
        self.label = label
        self.value = value
        self.colour = colour
    }
}

/// Self-contained SVG charts (no scripts, no fonts to fetch): a line chart with labelled axes, ticks at
/// round numbers and a legend, and a bar chart. Every line is one `<polyline class="series">` and every
/// bar one `<rect class="bar">`, each with a `data-name`, so tests and tools can find them.
public enum SVGChart {
    /// Colours that stay apart for the common forms of colour blindness (Okabe–Ito), then a few more.
    static let palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
                          "#7F7F7F", "#8C564B", "#17BECF", "#BCBD22"]

    static func colour(_ index: Int) -> String { palette[index % palette.count] }

    /// A line chart of `series` (series without points are listed in the legend only).
    public static func lines(title: String, xLabel: String, yLabel: String, series: [ChartSeries],
                             width: Int = 760, height: Int = 440) -> String {
        let legendWidth = 190.0
        let frame = Frame(width: Double(width), height: Double(height), left: 72, right: 24 + legendWidth, top: 44, bottom: 58)
        let xs = series.flatMap { $0.points.map(\.x) }.filter(\.isFinite)
        let ys = series.flatMap { $0.points.map(\.y) }.filter(\.isFinite)
        let xAxis = Axis(low: xs.min() ?? 0, high: xs.max() ?? 1, includeZero: true)
        let yAxis = Axis(low: ys.min() ?? 0, high: ys.max() ?? 1, includeZero: false)

        var svg = header(width: width, height: height, title: title)
        svg += axes(frame: frame, x: xAxis, y: yAxis, xLabel: xLabel, yLabel: yLabel)
        for (index, line) in series.enumerated() {
            let points = line.points.filter { $0.x.isFinite && $0.y.isFinite }
                .map { "\(number(frame.x($0.x, xAxis))),\(number(frame.y($0.y, yAxis)))" }
            guard !points.isEmpty else { continue }
            svg += "  <polyline class=\"series\" data-name=\"\(escape(line.name))\" fill=\"none\" stroke=\"\(colour(line.colour ?? index))\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"\(points.joined(separator: " "))\"/>\n"
            if points.count == 1, let only = points.first {
                let parts = only.split(separator: ",")
                svg += "  <circle cx=\"\(parts[0])\" cy=\"\(parts[1])\" r=\"3\" fill=\"\(colour(line.colour ?? index))\"/>\n"
            }
        }
        // The legend, right of the plot.
        let legendX = frame.width - legendWidth + 4
        svg += "  <g class=\"legend\" font-size=\"12\">\n"
        for (index, line) in series.enumerated() {
            let y = frame.top + 8 + Double(index) * 20
            svg += "    <line x1=\"\(number(legendX))\" y1=\"\(number(y))\" x2=\"\(number(legendX + 22))\" y2=\"\(number(y))\" stroke=\"\(colour(line.colour ?? index))\" stroke-width=\"3\"/>\n"
            svg += "    <text x=\"\(number(legendX + 28))\" y=\"\(number(y + 4))\">\(escape(line.name))</text>\n"
        }
        svg += "  </g>\n</svg>\n"
        return svg
    }

    /// A bar chart of `bars`, values written above the bars with `digits` decimals.
    public static func bars(title: String, yLabel: String, bars: [ChartBar], digits: Int = 4,
                            width: Int = 760, height: Int = 440) -> String {
        let frame = Frame(width: Double(width), height: Double(height), left: 72, right: 24, top: 44, bottom: 86)
        let values = bars.map(\.value).filter(\.isFinite)
        // Bars start at zero, or the differences would look larger than they are.
        let yAxis = Axis(low: min(0, values.min() ?? 0), high: values.max() ?? 1, includeZero: true)
        var svg = header(width: width, height: height, title: title)
        svg += axes(frame: frame, x: nil, y: yAxis, xLabel: nil, yLabel: yLabel)
        let slot = frame.plotWidth / Double(max(bars.count, 1))
        let barWidth = min(80, slot * 0.7)
        for (index, bar) in bars.enumerated() where bar.value.isFinite {
            let centre = frame.left + slot * (Double(index) + 0.5)
            let top = frame.y(max(bar.value, 0), yAxis), bottom = frame.y(min(bar.value, 0), yAxis)
            svg += "  <rect class=\"bar\" data-name=\"\(escape(bar.label))\" x=\"\(number(centre - barWidth / 2))\" y=\"\(number(top))\" width=\"\(number(barWidth))\" height=\"\(number(max(bottom - top, 0.5)))\" fill=\"\(colour(bar.colour ?? index))\"/>\n"
            svg += "  <text x=\"\(number(centre))\" y=\"\(number(top - 5))\" font-size=\"12\" text-anchor=\"middle\">\(String(format: "%.\(digits)f", bar.value))</text>\n"
            let labelY = frame.height - frame.bottom + 16
            svg += "  <text x=\"\(number(centre))\" y=\"\(number(labelY))\" font-size=\"12\" text-anchor=\"end\" transform=\"rotate(-30 \(number(centre)) \(number(labelY)))\">\(escape(bar.label))</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }

    /// Exponential moving average with bias correction (TensorBoard's smoothing): the first points are
    /// not pulled towards zero.
    public static func smoothed(_ points: [ChartPoint], weight: Double = 0.9) -> [ChartPoint] {
        var average = 0.0, correction = 1.0
        return points.map { point in
            average = weight * average + (1 - weight) * point.y
            correction *= weight
            return ChartPoint(x: point.x, y: average / (1 - correction))
        }
    }

    // MARK: parts

    /// The drawing area inside margins, and the maps from data to pixels.
    struct Frame {
        let width, height, left, right, top, bottom: Double
        var plotWidth: Double { width - left - right }
        var plotHeight: Double { height - top - bottom }
        func x(_ value: Double, _ axis: Axis) -> Double { left + (value - axis.low) / (axis.high - axis.low) * plotWidth }
        func y(_ value: Double, _ axis: Axis) -> Double { top + plotHeight - (value - axis.low) / (axis.high - axis.low) * plotHeight }
    }

    /// An axis from `low` to `high` widened to round ticks (1, 2 or 5 times a power of ten).
    public struct Axis {
        public let low, high, step: Double

        public init(low dataLow: Double, high dataHigh: Double, includeZero: Bool, ticks: Int = 6) {
            var low = includeZero ? min(dataLow, 0) : dataLow, high = includeZero ? max(dataHigh, 0) : dataHigh
            if !(high > low) {
                let pad = max(abs(low) * 0.05, 0.5)
                low -= pad
                high += pad
            }
            let rough = (high - low) / Double(ticks - 1)
            let magnitude = pow(10, floor(log10(rough)))
            let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
            self.step = step
            self.low = floor(low / step) * step
            self.high = ceil(high / step) * step
        }

        public var ticks: [Double] {
            var values: [Double] = []
            var value = low
            while value <= high + step * 1e-6 {
                values.append(abs(value) < step * 1e-9 ? 0 : value)
                value += step
            }
            return values
        }

        public func label(_ value: Double) -> String {
            if step >= 1, abs(value) >= 1000 || value == value.rounded() { return grouped(Int(value.rounded())) }
            let decimals = max(0, Int(ceil(-log10(step))) + (step * pow(10, ceil(-log10(step))) == 2.5 ? 1 : 0))
            return String(format: "%.\(decimals)f", value)
        }
    }

    static func header(width: Int, height: Int, title: String) -> String {
        """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" font-family="Helvetica, Arial, sans-serif">
          <title>\(escape(title))</title>
          <rect width="100%" height="100%" fill="white"/>
          <text x="\(width / 2)" y="26" font-size="16" font-weight="bold" text-anchor="middle">\(escape(title))</text>

        """
    }

    /// Grid, ticks, tick labels and axis titles; no x axis ticks when `x` is nil (bar charts).
    static func axes(frame: Frame, x: Axis?, y: Axis, xLabel: String?, yLabel: String) -> String {
        var svg = "  <g class=\"axes\" font-size=\"12\" stroke-linecap=\"square\">\n"
        let plotBottom = frame.top + frame.plotHeight, plotRight = frame.left + frame.plotWidth
        for tick in y.ticks {
            let position = number(frame.y(tick, y))
            svg += "    <line x1=\"\(number(frame.left))\" y1=\"\(position)\" x2=\"\(number(plotRight))\" y2=\"\(position)\" stroke=\"#e4e4e4\"/>\n"
            svg += "    <text x=\"\(number(frame.left - 6))\" y=\"\(position)\" dy=\"4\" text-anchor=\"end\">\(y.label(tick))</text>\n"
        }
        if let x {
            for tick in x.ticks {
                let position = number(frame.x(tick, x))
                svg += "    <line x1=\"\(position)\" y1=\"\(number(frame.top))\" x2=\"\(position)\" y2=\"\(number(plotBottom))\" stroke=\"#f0f0f0\"/>\n"
                svg += "    <text x=\"\(position)\" y=\"\(number(plotBottom + 18))\" text-anchor=\"middle\">\(x.label(tick))</text>\n"
            }
        }
        svg += "    <line x1=\"\(number(frame.left))\" y1=\"\(number(plotBottom))\" x2=\"\(number(plotRight))\" y2=\"\(number(plotBottom))\" stroke=\"black\"/>\n"
        svg += "    <line x1=\"\(number(frame.left))\" y1=\"\(number(frame.top))\" x2=\"\(number(frame.left))\" y2=\"\(number(plotBottom))\" stroke=\"black\"/>\n"
        if let xLabel {
            svg += "    <text class=\"x-label\" x=\"\(number(frame.left + frame.plotWidth / 2))\" y=\"\(number(frame.height - 14))\" font-size=\"13\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        }
        let yCentre = frame.top + frame.plotHeight / 2
        svg += "    <text class=\"y-label\" x=\"18\" y=\"\(number(yCentre))\" font-size=\"13\" text-anchor=\"middle\" transform=\"rotate(-90 18 \(number(yCentre)))\">\(escape(yLabel))</text>\n"
        svg += "  </g>\n"
        return svg
    }

    static func number(_ value: Double) -> String { String(format: "%.1f", value) }

    static func grouped(_ value: Int) -> String {
        let digits = String(abs(value))
        var text = ""
        for (index, character) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { text += "," }
            text.append(character)
        }
        return (value < 0 ? "-" : "") + text
    }

    /// Text made safe for XML content and attributes.
    static func escape(_ text: String) -> String {
        var escaped = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&apos;"
            default:
                // Control characters other than tab and newlines are not allowed in XML 1.0 at all.
                if scalar.value < 0x20 && scalar != "\t" && scalar != "\n" && scalar != "\r" { escaped += " " } else { escaped.unicodeScalars.append(scalar) }
            }
        }
        return escaped
    }
}
