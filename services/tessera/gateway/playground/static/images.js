// Image rendering: previews while a job runs, then the final PNGs with download links.

const pngUrl = (b64) => `data:image/png;base64,${b64}`;

/** Replace the contents of ``box`` with the previews of a running job. */
export function showPreviews(box, previews, step, total) {
  const figures = previews.map((p, i) => {
    const img = document.createElement("img");
    img.className = "preview";
    img.src = pngUrl(p.b64_png);
    img.width = p.width;
    img.height = p.height;
    img.alt = `Preview ${i + 1} of ${previews.length}, step ${step} of ${total}`;
    const fig = document.createElement("figure");
    fig.append(img);
    return fig;
  });
  box.replaceChildren(...figures);
}

/**
 * Replace the contents of ``box`` with a result's images (an ImagesResponse), each with a
 * download link. ``what`` describes them for screen readers ("a red heart", "variation").
 */
export function showResult(box, result, what, filePrefix = "tessera") {
  const figures = result.data.map((item, i) => {
    const src = item.b64_json ? pngUrl(item.b64_json) : item.url;
    const img = document.createElement("img");
    img.className = "final";
    img.src = src;
    img.alt = `${what}: image ${i + 1} of ${result.data.length}, seed ${result.seed}`;
    const link = document.createElement("a");
    link.href = src;
    link.download = `${filePrefix}-${result.seed}-${i + 1}.png`;
    link.textContent = "Download PNG";
    link.setAttribute("aria-label", `Download image ${i + 1} as PNG`);
    const caption = document.createElement("figcaption");
    caption.append(link);
    const fig = document.createElement("figure");
    fig.append(img, caption);
    return fig;
  });
  box.replaceChildren(...figures);
}

export function clear(box) {
  box.replaceChildren();
}
