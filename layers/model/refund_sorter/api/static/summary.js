// The night summary: counts per department and status, the review rate, and a confidence histogram drawn as
// inline SVG (no chart library). Everything is built with DOM calls, never from HTML strings.

const SVG = "http://www.w3.org/2000/svg";
const STATUSES = ["classified", "needs_review", "reviewed"];

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function svgElement(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function tile(value, label) {
  return element("div", { class: "tile" }, element("b", {}, String(value)), element("span", {}, label));
}

const percent = (value) => `${Math.round(value * 1000) / 10} %`;

export function departmentTable(summary, names) {
  const head = element("tr", {}, element("th", {}, "department"), ...STATUSES.map((s) => element("th", {}, s.replace("_", " "))), element("th", {}, "total"));
  const rows = summary.by_department.map((row) =>
    element(
      "tr",
      { "data-department": row.department },
      element("td", {}, names.get(row.department) || row.department),
      ...STATUSES.map((s) => element("td", {}, String(row[s]))),
      element("td", {}, String(row.total)),
    ),
  );
  return element("table", { id: "summary-departments" }, element("thead", {}, head), element("tbody", {}, ...rows));
}

// Ten bars of confidence, each split into sorted automatically (bottom) and sent to a person (top).
export function histogram(bins, { width = 460, height = 220 } = {}) {
  const margin = { top: 12, right: 8, bottom: 34, left: 36 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const tallest = Math.max(1, ...bins.map((b) => b.classified + b.asked));
  const barWidth = plotWidth / bins.length;
  const svg = svgElement("svg", {
    id: "confidence-histogram",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": "Confidence histogram: photos per confidence band, sorted automatically or sent to a person",
  });
  const y = (count) => margin.top + plotHeight - (count / tallest) * plotHeight;
  for (const tick of [0, Math.round(tallest / 2), tallest]) {
    svg.append(svgElement("text", { x: margin.left - 6, y: y(tick) + 4, "text-anchor": "end" }, String(tick)));
    svg.append(svgElement("line", { x1: margin.left, x2: width - margin.right, y1: y(tick), y2: y(tick), stroke: "#d9dee5" }));
  }
  bins.forEach((bin, index) => {
    const x = margin.left + index * barWidth + 2;
    const total = bin.classified + bin.asked;
    const bar = svgElement("g", { class: "bar", "data-low": bin.low, "data-count": total });
    bar.append(svgElement("title", {}, `${bin.low}–${bin.high}: ${bin.classified} automatic, ${bin.asked} asked`));
    bar.append(svgElement("rect", { class: "classified", x, width: barWidth - 4, y: y(bin.classified), height: y(0) - y(bin.classified) }));
    bar.append(svgElement("rect", { class: "asked", x, width: barWidth - 4, y: y(total), height: y(bin.classified) - y(total) }));
    svg.append(bar);
    svg.append(svgElement("text", { x: x + (barWidth - 4) / 2, y: height - margin.bottom + 14, "text-anchor": "middle" }, bin.low.toFixed(1)));
  });
  svg.append(svgElement("text", { x: margin.left + plotWidth / 2, y: height - 4, "text-anchor": "middle" }, "confidence of the predicted department"));
  return svg;
}

export function renderSummary(container, summary, names) {
  const legend = element(
    "p",
    {},
    "Bars: ",
    element("span", { class: "legend-classified" }, "■ sorted automatically"),
    " · ",
    element("span", { class: "legend-asked" }, "■ sent to a person"),
  );
  const reviewers = Object.entries(summary.reviewers).map(([who, count]) => element("li", {}, `${who}: ${count}`));
  container.replaceChildren(
    element(
      "div",
      { class: "tiles" },
      tile(summary.total, "photos"),
      tile(summary.by_status.failed || 0, "failed"),
      tile(percent(summary.review_rate), "review rate"),
      tile(summary.asked, "sent to a person"),
      tile(summary.decided, "decided by people"),
      tile(summary.corrected, "corrections of the model"),
    ),
    element(
      "div",
      { class: "summary-grid" },
      element("div", {}, element("h3", {}, "Per department"), departmentTable(summary, names)),
      element(
        "div",
        {},
        element("h3", {}, "Confidence"),
        histogram(summary.confidence_histogram),
        legend,
        element("h3", {}, "Decisions per person"),
        reviewers.length ? element("ul", {}, ...reviewers) : element("p", {}, "none yet"),
      ),
    ),
  );
}
