/* Facial keypoints in the reader's browser: the page "Try it in your browser" (book/demo.md).
 *
 * The same pipeline as `fkp predict` (fkp_helpers/photo.py: predict_faces with its defaults),
 * step by step, with OpenCV.js for detection and resampling and ONNX Runtime Web (WASM) for the
 * network. Every constant comes from fkp-model.json, written by `fkp export` from photo.py:
 *   1. detect_faces: grey (BT.601), shrink to DETECT_MAX_SIDE with INTER_AREA, pad by a quarter of
 *      the shorter side (replicated edges), Haar cascade, confirmed by the second cascade
 *      (IoU >= CONFIRM_IOU), boxes mapped back and rounded half to even as NumPy does;
 *   2. crop_square + crop_face: the FRAME_IN_BOX square, INTER_AREA (shrinking) or INTER_LINEAR;
 *   3. the network on the face and its mirror image, the mirror's points flipped back, averaged;
 *   4. refine: the eyes moved onto Kaggle's mean eye positions by a similarity transform
 *      (warp_face: INTER_AREA pre-shrink below 1/1.5, then bilinear warpAffine), predicted again,
 *      mapped back through the inverse transform.
 * Nothing is sent anywhere: the photo or the video frames stay in this tab.
 *
 * Test hook: demo.html?image=URL (same origin) runs on that image and writes JSON into
 * #fkp-result (a list, one {box, crop, keypoints} per face, photo pixels; or {"error": "..."}),
 * then sets data-status="done" on it (data-status="ready": loaded, no ?image=, waiting).
 */
(function () {
  "use strict";

  const script = document.currentScript;
  const BASE = new URL(".", script.src).href; // .../_static/fkp-demo/
  const MAX_SIDE = 4096; // longer photos are shrunk first (in the browser's own resampling)
  const MAX_PIXELS = 50e6; // larger ones are refused

  const $ = (id) => document.getElementById(id);
  const ui = {};
  let cv = null;
  let session = null;
  let info = null;
  let sizes = {};
  let cascade = null;
  let confirmCascade = null;
  let webcam = null;

  // ---------------------------------------------------------------------------------------------
  // Messages and the test hook

  function say(text, kind) {
    ui.status.textContent = text;
    ui.status.className = "fkp-status" + (kind ? " fkp-" + kind : "");
  }

  function publish(value, timing) {
    ui.result.textContent = JSON.stringify(value, null, 1);
    if (timing) {
      for (const [k, v] of Object.entries(timing)) ui.result.dataset[k] = String(v);
    }
    ui.result.dataset.status = "done";
  }

  function fail(message) {
    say(message, "error");
    publish({ error: message });
  }

  // ---------------------------------------------------------------------------------------------
  // Arithmetic as Python and NumPy do it

  /** round() of Python and np.round: halves go to the even neighbour. */
  function pyRound(x) {
    const f = Math.floor(x);
    const d = x - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return f % 2 === 0 ? f : f + 1;
  }

  // ---------------------------------------------------------------------------------------------
  // Loading

  function wasmSupported() {
    if (typeof WebAssembly !== "object" || typeof WebAssembly.validate !== "function") return false;
    // A module with one SIMD instruction (ONNX Runtime Web needs WebAssembly SIMD).
    const simd = new Uint8Array([
      0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0,
      253, 15, 253, 98, 11,
    ]);
    try {
      return WebAssembly.validate(simd);
    } catch (e) {
      return false;
    }
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.async = true;
      s.onload = resolve;
      s.onerror = () => reject(new Error("could not load " + src));
      document.head.appendChild(s);
    });
  }

  async function fetchOk(url, what) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`could not load ${what} (${url}: HTTP ${r.status})`);
    return r;
  }

  /** Resolves to {module: cv} once OpenCV.js has started. (Wrapped: the Emscripten module has a
   * `then` method, and a promise resolved with it would call that `then` again and again.) */
  function openCvReady() {
    return new Promise((resolve, reject) => {
      const started = Date.now();
      const poll = () => {
        const m = window.cv;
        if (m && m.Mat && m.CascadeClassifier) return resolve({ module: m });
        if (Date.now() - started > 120000) return reject(new Error("OpenCV.js did not start"));
        setTimeout(poll, 50);
      };
      poll();
    });
  }

  async function loadCascade(name) {
    const bytes = new Uint8Array(await (await fetchOk(BASE + name, name)).arrayBuffer());
    try {
      cv.FS_unlink("/" + name);
    } catch (e) {
      /* not there yet */
    }
    cv.FS_createDataFile("/", name, bytes, true, false, false);
    const c = new cv.CascadeClassifier();
    if (!c.load("/" + name)) throw new Error("OpenCV.js could not read " + name);
    return c;
  }

  async function load() {
    info = await (await fetchOk(BASE + "model/fkp-model.json", "the model's description")).json();
    sizes = await (await fetchOk(BASE + "sizes.json", "the list of the page's files")).json();
    say("Loading ONNX Runtime Web and OpenCV.js…");
    await Promise.all([loadScript(BASE + "vendor/ort/ort.wasm.min.js"), loadScript(BASE + "vendor/opencv/opencv.js")]);
    const ort = window.ort;
    ort.env.wasm.wasmPaths = BASE + "vendor/ort/";
    ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which static hosts lack
    say("Loading the model…");
    const modelBytes = new Uint8Array(await (await fetchOk(BASE + "model/" + info.model, "the model")).arrayBuffer());
    session = await ort.InferenceSession.create(modelBytes, { executionProviders: ["wasm"] });
    cv = (await openCvReady()).module;
    cascade = await loadCascade(info.detector.cascade);
    confirmCascade = await loadCascade(info.detector.confirm_cascade);
    const v = info.validation || {};
    const mb = (bytes) => (bytes / 1e6).toFixed(1) + " MB";
    const sum = (prefix) =>
      Object.entries(sizes).reduce((t, [k, b]) => (k.startsWith(prefix) ? t + b : t), 0);
    const total = Object.values(sizes).reduce((t, b) => t + b, 0);
    ui.model.textContent =
      `Model: ${mb(info.measured.onnx_bytes)}, ` +
      (v.val_rmse !== undefined ? `validation RMSE ${v.val_rmse.toFixed(2)} px` : "validation figures unknown") +
      (v.profile ? ` (the book's "${v.profile}" reference run)` : "") +
      (v.profile === "quick"
        ? `. That is the quick profile's smoke-test model (${v.epochs_run} epochs on a few hundred ` +
          "faces, for the tests): expect rough " +
          "points; running make book puts the full profile's model here"
        : "") +
      `. This page downloaded ${mb(total)}: the model ${mb(sum("model/"))}, ONNX Runtime Web ` +
      `${mb(sum("vendor/ort/"))}, OpenCV.js ${mb(sum("vendor/opencv/"))}, the rest ` +
      `${mb(total - sum("model/") - sum("vendor/"))}.`;
  }

  // ---------------------------------------------------------------------------------------------
  // The pipeline (photo.py)

  function boxIou(a, b) {
    const w = Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]);
    const h = Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]);
    const inter = Math.max(w, 0) * Math.max(h, 0);
    return inter / (a[2] * a[3] + b[2] * b[3] - inter);
  }

  function detectMulti(c, img, minNeighbors, minPx) {
    const found = new cv.RectVector();
    const d = info.detector;
    c.detectMultiScale(img, found, d.scale_factor, minNeighbors, 0, new cv.Size(minPx, minPx), new cv.Size(0, 0));
    const out = [];
    for (let i = 0; i < found.size(); i++) {
      const r = found.get(i);
      out.push([r.x, r.y, r.width, r.height]);
    }
    found.delete();
    return out;
  }

  /** photo.detect_faces: boxes [x, y, w, h] in photo pixels, left to right. */
  function detectFaces(gray) {
    const d = info.detector;
    const h = gray.rows;
    const w = gray.cols;
    const shrink = Math.min(1.0, d.detect_max_side / Math.max(h, w));
    let small = gray;
    if (shrink < 1.0) {
      small = new cv.Mat();
      const size = new cv.Size(Math.max(1, pyRound(w * shrink)), Math.max(1, pyRound(h * shrink)));
      cv.resize(gray, small, size, 0, 0, cv.INTER_AREA);
    }
    const sh = small.rows;
    const sw = small.cols;
    const pad = pyRound(d.pad_fraction * Math.min(sh, sw));
    const padded = new cv.Mat();
    cv.copyMakeBorder(small, padded, pad, pad, pad, pad, cv.BORDER_REPLICATE);
    if (small !== gray) small.delete();
    const minPx = Math.max(d.min_face_px, Math.ceil(d.min_face_fraction * Math.min(sh, sw)));
    let boxes = detectMulti(cascade, padded, d.min_neighbors, minPx);
    if (boxes.length) {
      const second = detectMulti(confirmCascade, padded, d.confirm_min_neighbors, minPx);
      boxes = boxes.filter((b) => second.some((s) => boxIou(b, s) >= d.confirm_iou));
    }
    padded.delete();
    const out = [];
    for (const b of boxes) {
      const bx = b[0] - pad;
      const by = b[1] - pad;
      const x0 = (bx - 0.5 + 0.5) / shrink - 0.5;
      const y0 = (by - 0.5 + 0.5) / shrink - 0.5;
      const size = b[2] / shrink;
      const box = [pyRound(x0 + 0.5), pyRound(y0 + 0.5), pyRound(size), pyRound(size)];
      const cx = box[0] + box[2] / 2;
      const cy = box[1] + box[3] / 2;
      if (cx >= 0 && cx < w && cy >= 0 && cy < h) out.push(box);
    }
    return out.sort((a, b) => a[0] - b[0]); // Array.sort is stable, as NumPy's kind="stable"
  }

  /** photo.crop_square: {left, top, size}, edges in photo pixels. */
  function cropSquare(box) {
    const [fx, fy, fs] = info.crop.frame_in_box;
    const x = box[0];
    const y = box[1];
    const w = box[2];
    const size = Math.max(1, pyRound(fs * w));
    return { left: pyRound(x + fx * w) - 0.5, top: pyRound(y + fy * w) - 0.5, size: size };
  }

  /** photo.crop_face: the square as a 96x96 grey face (a cv.Mat the caller deletes). */
  function cropFace(gray, crop) {
    const n = info.image_size;
    const h = gray.rows;
    const w = gray.cols;
    const x0 = pyRound(crop.left + 0.5);
    const y0 = pyRound(crop.top + 0.5);
    const s = pyRound(crop.size);
    const pl = Math.max(0, -x0);
    const pt = Math.max(0, -y0);
    const pr = Math.max(0, x0 + s - w);
    const pb = Math.max(0, y0 + s - h);
    let src = gray;
    if (pl || pt || pr || pb) {
      src = new cv.Mat();
      cv.copyMakeBorder(gray, src, pt, pb, pl, pr, cv.BORDER_REPLICATE);
    }
    const square = src.roi(new cv.Rect(x0 + pl, y0 + pt, s, s));
    const out = new cv.Mat();
    cv.resize(square, out, new cv.Size(n, n), 0, 0, s > n ? cv.INTER_AREA : cv.INTER_LINEAR);
    square.delete();
    if (src !== gray) src.delete();
    return out;
  }

  /** photo.eye_alignment_matrix: 2x3 [a, b, c, d, e, f] from photo pixels to the 96x96 frame. */
  function eyeAlignment(kp) {
    const eyes = info.crop.eyes_96;
    const names = info.keypoint_names;
    const li = names.indexOf("left_eye_center");
    const ri = names.indexOf("right_eye_center");
    const s0 = [kp[2 * li], kp[2 * li + 1]];
    const s1 = [kp[2 * ri], kp[2 * ri + 1]];
    const d0 = [eyes.left_eye_center[0] + 0.5 - 0.5, eyes.left_eye_center[1] + 0.5 - 0.5];
    const d1 = [eyes.right_eye_center[0] + 0.5 - 0.5, eyes.right_eye_center[1] + 0.5 - 0.5];
    // a = (d0 - d1) / (s0 - s1) as complex numbers; b = d0 - a s0
    const nr = d0[0] - d1[0];
    const ni = d0[1] - d1[1];
    const zr = s0[0] - s1[0];
    const zi = s0[1] - s1[1];
    const den = zr * zr + zi * zi;
    if (!(den > 0)) throw new Error("the two eye centres coincide: cannot align");
    const ar = (nr * zr + ni * zi) / den;
    const ai = (ni * zr - nr * zi) / den;
    const br = d0[0] - (ar * s0[0] - ai * s0[1]);
    const bi = d0[1] - (ar * s0[1] + ai * s0[0]);
    return [ar, -ai, br, ai, ar, bi];
  }

  function invertAffine(m) {
    const [a, b, c, d, e, f] = m;
    const det = a * e - b * d;
    const ia = e / det;
    const ib = -b / det;
    const id = -d / det;
    const ie = a / det;
    return [ia, ib, -(ia * c + ib * f), id, ie, -(id * c + ie * f)];
  }

  function applyAffine(kp, m) {
    const out = new Float64Array(kp.length);
    for (let i = 0; i < kp.length; i += 2) {
      out[i] = m[0] * kp[i] + m[1] * kp[i + 1] + m[2];
      out[i + 1] = m[3] * kp[i] + m[4] * kp[i + 1] + m[5];
    }
    return out;
  }

  /** photo.warp_face: the grey photo through a 2x3 map into a 96x96 face (a cv.Mat). */
  function warpFace(gray, m0) {
    const n = info.image_size;
    let m = m0.slice();
    let src = gray;
    const shrink = Math.sqrt(Math.abs(m[0] * m[4] - m[1] * m[3]));
    if (shrink < info.crop.warp_preshrink_below) {
      const h = gray.rows;
      const w = gray.cols;
      const sw = Math.max(1, pyRound(w * shrink));
      const sh = Math.max(1, pyRound(h * shrink));
      src = new cv.Mat();
      cv.resize(gray, src, new cv.Size(sw, sh), 0, 0, cv.INTER_AREA);
      const gx = sw / w;
      const gy = sh / h;
      // small-image pixel -> photo pixel, then the photo -> output map
      const s = [1 / gx, 0, 0.5 / gx - 0.5, 0, 1 / gy, 0.5 / gy - 0.5];
      m = [
        m0[0] * s[0] + m0[1] * s[3], m0[0] * s[1] + m0[1] * s[4], m0[0] * s[2] + m0[1] * s[5] + m0[2],
        m0[3] * s[0] + m0[4] * s[3], m0[3] * s[1] + m0[4] * s[4], m0[3] * s[2] + m0[4] * s[5] + m0[5],
      ];
    }
    const mat = cv.matFromArray(2, 3, cv.CV_64F, m);
    const out = new cv.Mat();
    cv.warpAffine(src, out, mat, new cv.Size(n, n), cv.INTER_LINEAR, cv.BORDER_REPLICATE, new cv.Scalar());
    mat.delete();
    if (src !== gray) src.delete();
    return out;
  }

  let networkMs = 0;
  let networkRuns = 0;

  /** photo.predict_crops with flip_average: Float32Array(30) per face, 96x96-frame pixels. */
  async function predictCrops(faces) {
    const n = info.image_size;
    const count = faces.length;
    const mirror = info.predict.flip_average;
    const batch = mirror ? 2 * count : count;
    const x = new Float32Array(batch * n * n);
    faces.forEach((face, i) => {
      const px = face.data;
      for (let r = 0; r < n; r++) {
        for (let c = 0; c < n; c++) {
          const v = px[r * n + c] / 255.0;
          x[(i * n + r) * n + c] = v;
          if (mirror) x[((count + i) * n + r) * n + (n - 1 - c)] = v;
        }
      }
    });
    const tensor = new window.ort.Tensor("float32", x, [batch, n, n, 1]);
    const t0 = performance.now();
    const outputs = await session.run({ [info.input.name]: tensor });
    networkMs += performance.now() - t0;
    networkRuns += batch;
    const y = outputs[info.output.name].data;
    const k = 2 * info.keypoint_names.length;
    const perm = info.flip_permutation;
    const result = [];
    for (let i = 0; i < count; i++) {
      const direct = y.subarray(i * k, (i + 1) * k);
      if (!mirror) {
        result.push(Float32Array.from(direct));
        continue;
      }
      const flipped = y.subarray((count + i) * k, (count + i + 1) * k);
      const avg = new Float32Array(k);
      for (let p = 0; p < k / 2; p++) {
        const q = perm[p];
        const ux = Math.fround(info.flip_x_constant - flipped[2 * q]);
        const uy = flipped[2 * q + 1];
        avg[2 * p] = Math.fround(Math.fround(direct[2 * p] + ux) / 2);
        avg[2 * p + 1] = Math.fround(Math.fround(direct[2 * p + 1] + uy) / 2);
      }
      result.push(avg);
    }
    return result;
  }

  function cropToPhoto(crop, k96) {
    const scale = crop.size / info.image_size;
    const out = new Float64Array(k96.length);
    for (let i = 0; i < k96.length; i += 2) {
      out[i] = crop.left + (k96[i] + 0.5) * scale;
      out[i + 1] = crop.top + (k96[i + 1] + 0.5) * scale;
    }
    return out;
  }

  /** photo.predict_faces with fkp predict's defaults: [{box, crop, keypoints(Float64Array)}]. */
  async function predictFaces(gray) {
    const boxes = detectFaces(gray);
    if (!boxes.length) return [];
    const crops = boxes.map(cropSquare);
    let images = crops.map((c) => cropFace(gray, c));
    let k96 = await predictCrops(images);
    images.forEach((m) => m.delete());
    let kp = crops.map((c, i) => cropToPhoto(c, k96[i]));
    if (info.predict.refine) {
      const mats = kp.map(eyeAlignment);
      images = mats.map((m) => warpFace(gray, m));
      k96 = await predictCrops(images);
      images.forEach((m) => m.delete());
      kp = mats.map((m, i) => applyAffine(k96[i], invertAffine(m)));
    }
    return boxes.map((box, i) => ({ box: box, crop: crops[i], keypoints: kp[i] }));
  }

  // ---------------------------------------------------------------------------------------------
  // Drawing and results

  function draw(ctx, faces, scale) {
    const sides = info.keypoint_sides;
    const colours = info.side_colours;
    const lw = Math.max(1, Math.round(Math.min(ctx.canvas.width, ctx.canvas.height) / 300));
    for (const f of faces) {
      const [x, y, w, h] = f.box.map((v) => v * scale);
      ctx.lineWidth = lw;
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(x - 0.5 * scale, y - 0.5 * scale, w, h);
      const r = Math.max(2, w / 45);
      for (let p = 0; p < sides.length; p++) {
        // canvas pixel (i, j) covers [i, i+1): a photo pixel centre at x sits at (x + 0.5) * scale
        const px = (f.keypoints[2 * p] + 0.5) * scale;
        const py = (f.keypoints[2 * p + 1] + 0.5) * scale;
        ctx.beginPath();
        ctx.arc(px, py, r, 0, 2 * Math.PI);
        ctx.fillStyle = colours[sides[p]];
        ctx.fill();
        ctx.lineWidth = lw;
        ctx.strokeStyle = "#000000";
        ctx.stroke();
      }
    }
  }

  /** The test hook's JSON: photo pixels of the original photo (``scale`` < 1 when it was shrunk). */
  function asJson(faces, scale) {
    const names = info.keypoint_names;
    const back = (v) => (scale === 1 ? v : (v + 0.5) / scale - 0.5); // pixel centres at integers
    const r3 = (v) => Math.round(v * 1000) / 1000;
    return faces.map((f) => {
      const keypoints = {};
      names.forEach((name, p) => {
        keypoints[name] = [r3(back(f.keypoints[2 * p])), r3(back(f.keypoints[2 * p + 1]))];
      });
      const box = scale === 1 ? f.box.slice() : f.box.map((v) => pyRound(v / scale));
      const crop = { left: back(f.crop.left), top: back(f.crop.top), size: f.crop.size / scale };
      return { box: box, crop: crop, keypoints: keypoints };
    });
  }

  /** Grey cv.Mat of what the canvas shows. */
  function grayOf(ctx) {
    const { width, height } = ctx.canvas;
    const rgba = cv.matFromImageData(ctx.getImageData(0, 0, width, height));
    const gray = new cv.Mat();
    cv.cvtColor(rgba, gray, cv.COLOR_RGBA2GRAY);
    rgba.delete();
    return gray;
  }

  // ---------------------------------------------------------------------------------------------
  // A photo

  async function runOnBlob(blob, name) {
    stopWebcam();
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch (e) {
      return fail(`${name}: not an image this browser can read (JPEG, PNG, WebP, GIF, BMP…).`);
    }
    const W = bitmap.width;
    const H = bitmap.height;
    if (W * H > MAX_PIXELS) {
      bitmap.close();
      return fail(
        `${name} is ${W} x ${H} pixels (${(W * H / 1e6).toFixed(0)} megapixels): too large for this page ` +
          `(at most ${MAX_PIXELS / 1e6} megapixels). Shrink it first, or use \`fkp predict\`.`
      );
    }
    if (Math.min(W, H) < info.detector.min_face_px) {
      bitmap.close();
      return fail(
        `${name} is ${W} x ${H} pixels: too small to hold a face the detector can find ` +
          `(faces must be at least ${info.detector.min_face_px} x ${info.detector.min_face_px} pixels).`
      );
    }
    const scale = Math.min(1, MAX_SIDE / Math.max(W, H));
    const w = Math.round(W * scale);
    const h = Math.round(H * scale);
    const canvas = ui.canvas;
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.fillStyle = "#ffffff"; // transparent pixels over white, as fkp predict reads them
    ctx.fillRect(0, 0, w, h);
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(bitmap, 0, 0, w, h);
    bitmap.close();
    say(`Looking for faces in ${name}…`);
    await new Promise((r) => setTimeout(r, 0));
    const t0 = performance.now();
    networkMs = 0;
    networkRuns = 0;
    const gray = grayOf(ctx);
    let faces;
    try {
      faces = await predictFaces(gray);
    } finally {
      gray.delete();
    }
    const total = performance.now() - t0;
    draw(ctx, faces, 1);
    const shrunk = scale < 1 ? ` The photo (${W} x ${H}) was shrunk to ${w} x ${h} for this page; ` +
      "the keypoints are given in the original's pixels." : "";
    const timing = {
      msTotal: total.toFixed(1),
      msNetwork: networkMs.toFixed(1),
      networkRuns: networkRuns,
      faces: faces.length,
      msPerFace: faces.length ? (total / faces.length).toFixed(1) : "",
    };
    ui.timing.textContent = faces.length
      ? `${total.toFixed(0)} ms for the photo (${(total / faces.length).toFixed(0)} ms per face: detection, ` +
        `two looks, each on the face and its mirror image; the network itself ${(networkMs / networkRuns).toFixed(1)} ms per run).`
      : `${total.toFixed(0)} ms.`;
    if (!faces.length) {
      const msg =
        `No face found in the ${W} x ${H} photo. The detector looks for upright, roughly frontal faces ` +
        `at least ${Math.round(info.detector.min_face_fraction * 100)}% of the photo's shorter side; ` +
        "try a closer crop or a better-lit, frontal photo.";
      say(msg, "warn");
      publish({ error: msg }, timing);
      return;
    }
    say(`${faces.length} face${faces.length > 1 ? "s" : ""} in ${name}.${shrunk}`, "ok");
    publish(asJson(faces, scale), timing);
  }

  async function runOnUrl(param) {
    let url;
    try {
      url = new URL(param, location.href);
    } catch (e) {
      return fail(`?image=${param}: not a URL`);
    }
    if (url.origin !== location.origin) {
      return fail(`?image=${param}: only images from this site (${location.origin}) are accepted`);
    }
    let r;
    try {
      r = await fetch(url);
    } catch (e) {
      return fail(`?image=${param}: could not fetch it (${e.message})`);
    }
    if (!r.ok) return fail(`?image=${param}: HTTP ${r.status}`);
    await runOnBlob(await r.blob(), url.pathname.split("/").pop());
  }

  // ---------------------------------------------------------------------------------------------
  // The webcam

  function stopWebcam() {
    if (!webcam) return;
    webcam.stream.getTracks().forEach((t) => t.stop());
    webcam.running = false;
    webcam = null;
    ui.webcam.textContent = "Use the webcam";
  }

  async function startWebcam() {
    if (webcam) return stopWebcam();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return fail(
        "This browser offers no webcam to this page: browsers allow the camera only on https:// " +
          "pages and on http://localhost or 127.0.0.1 (`make serve`)."
      );
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false,
      });
    } catch (e) {
      if (e.name === "NotAllowedError" || e.name === "SecurityError") {
        return fail(
          "The webcam was not allowed. To use it, allow this page to use the camera (the icon in the " +
            "address bar), then press the button again; or pick a photo instead."
        );
      }
      if (e.name === "NotFoundError" || e.name === "OverconstrainedError") {
        return fail("No webcam was found on this machine. Pick a photo instead.");
      }
      return fail(`The webcam could not be started (${e.name}: ${e.message}).`);
    }
    const video = document.createElement("video");
    video.muted = true;
    video.playsInline = true;
    video.srcObject = stream;
    await video.play();
    webcam = { stream: stream, running: true };
    ui.webcam.textContent = "Stop the webcam";
    say("Webcam on. The video stays in this tab: no frame is sent anywhere.", "ok");
    const ctx = ui.canvas.getContext("2d", { willReadFrequently: true });
    const me = webcam;
    const frame = async () => {
      if (!me.running) return;
      const w = video.videoWidth;
      const h = video.videoHeight;
      if (w && h) {
        if (ui.canvas.width !== w || ui.canvas.height !== h) {
          ui.canvas.width = w;
          ui.canvas.height = h;
        }
        ctx.drawImage(video, 0, 0, w, h);
        const t0 = performance.now();
        networkMs = 0;
        networkRuns = 0;
        const gray = grayOf(ctx);
        let faces = [];
        try {
          faces = await predictFaces(gray);
        } finally {
          gray.delete();
        }
        const ms = performance.now() - t0;
        draw(ctx, faces, 1);
        ui.timing.textContent =
          `${ms.toFixed(0)} ms per frame (${(1000 / ms).toFixed(0)} frames/s), ${faces.length} face(s)` +
          (networkRuns ? `; the network ${(networkMs / networkRuns).toFixed(1)} ms per run.` : ".");
      }
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  async function main() {
    for (const id of ["status", "result", "canvas", "timing", "model", "file", "sample", "webcam", "controls"]) {
      ui[id] = $("fkp-" + id);
    }
    if (location.protocol === "file:") {
      return fail(
        "This page was opened from a file, and browsers do not let such pages load the model. " +
          "Serve the book instead: run `make serve` in the repository and open " +
          "http://127.0.0.1:8000/book/demo.html (or read the published book)."
      );
    }
    if (!wasmSupported()) {
      return fail(
        "This browser cannot run the model: it needs WebAssembly with SIMD (any current Chrome, " +
          "Edge, Firefox or Safari has it; it may be switched off by a policy or a 'lockdown' mode)."
      );
    }
    if (typeof createImageBitmap !== "function" || !ui.canvas.getContext) {
      return fail("This browser lacks the canvas features the page needs; try a current browser.");
    }
    try {
      await load();
    } catch (e) {
      return fail("The demo could not start: " + e.message);
    }
    ui.controls.hidden = false;
    say("Ready. Pick a photo, try the sample portrait, or use the webcam.", "ok");
    ui.file.addEventListener("change", () => {
      const f = ui.file.files[0];
      if (f) runOnBlob(f, f.name).catch((e) => fail(`${f.name}: ${e.message}`));
    });
    ui.sample.addEventListener("click", () =>
      runOnUrl(BASE + "astronaut.png").catch((e) => fail(e.message))
    );
    ui.webcam.addEventListener("click", () => startWebcam().catch((e) => fail(e.message)));
    const param = new URLSearchParams(location.search).get("image");
    if (param) await runOnUrl(param).catch((e) => fail(`${param}: ${e.message}`));
    else ui.result.dataset.status = "ready"; // loaded, waiting for the reader
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
})();
