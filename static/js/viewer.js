// Case page reading room: one viewport per image (OpenSeadragon for zoom and pan), window/level
// on a canvas of the image's real values, the Grad-CAM heatmap over the same viewport, priors
// beside the current image, and the keyboard.
//
// Window/level: a DICOM's modality values come as a 16-bit greyscale PNG (images/<id>/pixels/,
// decoded here: browsers draw 16-bit PNGs as 8 bits); a PNG or JPEG upload windows its 8 bits.
// The windowed canvas is an OpenSeadragon overlay over the whole image, and so is the heatmap
// (the model input stretched over the image, as preprocessing stretched the image to it), so
// both move and zoom with the image and stay registered to it.
(function () {
  "use strict";

  var OSD = window.OpenSeadragon;

  // CT presets in Hounsfield units (centre, width).
  var CT_PRESETS = [
    { key: "lung", label: "Lung", center: -600, width: 1500 },
    { key: "mediastinum", label: "Mediastinum", center: 40, width: 400 },
    { key: "bone", label: "Bone", center: 400, width: 1800 }
  ];

  // 16-bit PNG ---------------------------------------------------------------------------------

  function inflate(bytes) {
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer();
  }

  function paeth(a, b, c) {
    var p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
  }

  // A non-interlaced 16-bit greyscale PNG -> {width, height, values: Uint16Array, offset, scale}
  // (modality value = sample * scale + offset, from the file's "xnet-values" text chunk).
  function decodePng16(buffer) {
    var view = new DataView(buffer), bytes = new Uint8Array(buffer), pos = 8;
    var width = 0, height = 0, depth = 0, type = -1, interlace = 0, offset = 0, scale = 1;
    var parts = [], total = 0;
    while (pos + 8 <= bytes.length) {
      var length = view.getUint32(pos), name = String.fromCharCode.apply(null, bytes.subarray(pos + 4, pos + 8));
      var body = bytes.subarray(pos + 8, pos + 8 + length);
      if (name === "IHDR") {
        width = view.getUint32(pos + 8); height = view.getUint32(pos + 12);
        depth = body[8]; type = body[9]; interlace = body[12];
      } else if (name === "IDAT") {
        parts.push(body); total += body.length;
      } else if (name === "tEXt") {
        var text = String.fromCharCode.apply(null, body), nul = text.indexOf("\u0000");
        if (text.slice(0, nul) === "xnet-values") {
          var numbers = text.slice(nul + 1).split(" ");
          offset = Number(numbers[0]); scale = Number(numbers[1]);
        }
      } else if (name === "IEND") {
        break;
      }
      pos += 12 + length;
    }
    if (depth !== 16 || type !== 0 || interlace !== 0) {
      return Promise.reject(new Error("not a 16-bit greyscale PNG"));
    }
    var idat = new Uint8Array(total), at = 0;
    parts.forEach(function (part) { idat.set(part, at); at += part.length; });
    return inflate(idat).then(function (raw) {
      var data = new Uint8Array(raw), stride = width * 2, bpp = 2;
      var previous = new Uint8Array(stride), row = new Uint8Array(stride);
      var values = new Uint16Array(width * height);
      for (var y = 0; y < height; y++) {
        var start = y * (stride + 1), filter = data[start];
        for (var x = 0; x < stride; x++) {
          var raw_ = data[start + 1 + x], left = x >= bpp ? row[x - bpp] : 0, up = previous[x];
          var upLeft = x >= bpp ? previous[x - bpp] : 0;
          row[x] = (filter === 0 ? raw_ : filter === 1 ? raw_ + left : filter === 2 ? raw_ + up
            : filter === 3 ? raw_ + ((left + up) >> 1) : raw_ + paeth(left, up, upLeft)) & 255;
        }
        for (var i = 0, base = y * width; i < width; i++) {
          values[base + i] = (row[2 * i] << 8) | row[2 * i + 1];
        }
        var swap = previous; previous = row; row = swap;
      }
      return { width: width, height: height, values: values, offset: offset, scale: scale };
    });
  }

  // An 8-bit image's grey values, read from a canvas.
  function greyValues(img) {
    var canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    var ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(img, 0, 0);
    var rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    var values = new Uint16Array(canvas.width * canvas.height);
    for (var i = 0, j = 0; i < values.length; i++, j += 4) {
      values[i] = (rgba[j] * 299 + rgba[j + 1] * 587 + rgba[j + 2] * 114 + 500) / 1000;
    }
    return { width: canvas.width, height: canvas.height, values: values, offset: 0, scale: 1 };
  }

  function loadImage(url) {
    return new Promise(function (resolve, reject) {
      var img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { reject(new Error("image did not load")); };
      img.src = url;
    });
  }

  // One viewport ------------------------------------------------------------------------------

  function Viewport(root) {
    this.root = root;
    this.data = root.dataset;
    this.area = root.querySelector(".viewer-area");
    this.readout = root.querySelector(".viewer-readout");
    this.isDicom = !!this.data.pixelsUrl;
    this.isCt = this.data.modality === "ct";
    this.monochrome1 = this.data.photometric === "MONOCHROME1";
    this.invert = false;
    this.dragWindow = false;
    this.pixels = null;
    this.heatmap = null;
    this.heatmapUrl = null;
    this.opened = false;
    this.ready = false;
    this.start();
  }

  Viewport.prototype.presets = function () {
    var list = [{ key: "default", label: this.isDicom ? "Default" : "Full 8 bits" }];
    if (this.isCt) {
      list = list.concat(CT_PRESETS);
    } else if (this.isDicom) {
      list.push({ key: "full", label: "Full range" });
    }
    return list;
  };

  Viewport.prototype.defaultWindow = function () {
    if (!this.isDicom) {
      return { center: 128, width: 256 }; // the stored 8 bits as they are (value v shows as v)
    }
    var center = parseFloat(this.data.windowCenter), width = parseFloat(this.data.windowWidth);
    if (isFinite(center) && isFinite(width) && width > 0) {
      return { center: center, width: width };
    }
    return this.fullWindow();
  };

  Viewport.prototype.fullWindow = function () {
    var p = this.pixels;
    if (!p) {
      return { center: 127.5, width: 256 };
    }
    var low = p.min * p.scale + p.offset, high = p.max * p.scale + p.offset;
    return { center: (low + high) / 2, width: Math.max(high - low, 1) };
  };

  Viewport.prototype.start = function () {
    var self = this;
    this.osd = OSD({
      element: this.area,
      tileSources: { type: "image", url: this.data.imageUrl, buildPyramid: false },
      drawer: "canvas",
      keyboardNavEnabled: false, // the page's own keys (below) steer the viewer
      showNavigationControl: false,
      maxZoomPixelRatio: 16,
      minZoomImageRatio: 0.5,
      visibilityRatio: 0.3,
      animationTime: 0.25,
      preserveImageSizeOnResize: true,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, scrollToZoom: true },
      gestureSettingsTouch: { pinchToZoom: true, flickEnabled: false }
    });
    this.osd.addHandler("open", function () {
      self.opened = true;
      self.item = self.osd.world.getItemAt(0);
      var size = self.item.getContentSize();
      self.width = size.x; self.height = size.y;
      self.canvas = document.createElement("canvas");
      self.canvas.className = "viewer-canvas";
      self.canvas.width = size.x; self.canvas.height = size.y;
      self.osd.addOverlay({ element: self.canvas, location: self.item.imageToViewportRectangle(0, 0, size.x, size.y) });
      self.syncHeatmap();
      self.loadPixels();
      self.osd.addHandler("zoom", function () { self.showReadout(); });
    });
    this.bindWindowDrag();
  };

  Viewport.prototype.loadPixels = function () {
    var self = this, loading, started = performance.now();
    // How long each step took (benchmarks/viewer.py reads these).
    this.timings = {};
    if (this.isDicom) {
      loading = fetch(this.data.pixelsUrl, { credentials: "same-origin" }).then(function (response) {
        if (!response.ok) {
          throw new Error("status " + response.status);
        }
        return response.arrayBuffer();
      }).then(function (buffer) {
        self.timings.fetchMs = performance.now() - started;
        self.timings.bytes = buffer.byteLength;
        var decoding = performance.now();
        return decodePng16(buffer).then(function (pixels) {
          self.timings.decodeMs = performance.now() - decoding;
          return pixels;
        });
      });
    } else {
      // The picture OpenSeadragon already loaded (the file is sent no-store: a second request
      // would download it again).
      var opened = this.item && this.item.source && this.item.source.image;
      loading = opened && opened.complete && opened.naturalWidth ? Promise.resolve(greyValues(opened))
        : loadImage(this.data.imageUrl).then(greyValues);
    }
    loading.then(function (pixels) {
      if (pixels.width !== self.width || pixels.height !== self.height) {
        throw new Error("the values do not match the image's size");
      }
      var min = 65535, max = 0, values = pixels.values;
      for (var i = 0; i < values.length; i++) {
        if (values[i] < min) { min = values[i]; }
        if (values[i] > max) { max = values[i]; }
      }
      pixels.min = min; pixels.max = max;
      self.pixels = pixels;
      self.context = self.canvas.getContext("2d");
      self.imageData = self.context.createImageData(pixels.width, pixels.height);
      self.window = self.defaultWindow();
      self.preset = "default";
      self.ready = true;
      self.render();
      self.timings.readyMs = performance.now() - started;
      // The windowed canvas covers the image: hide OpenSeadragon's own 8-bit drawing, whose
      // edge would otherwise show past the canvas's by a fraction of a pixel.
      self.item.setOpacity(0);
      self.root.dataset.ready = "true";
    }).catch(function (error) {
      // The 8-bit image OpenSeadragon drew stays; only window/level is unavailable.
      self.root.dataset.ready = "error";
      if (self.readout) {
        self.readout.textContent = "Window/level unavailable (" + error.message + "); showing the stored image.";
      }
    });
  };

  Viewport.prototype.render = function () {
    if (!this.ready) {
      return;
    }
    var began = performance.now();
    var p = this.pixels, size = p.max + 1, lut = new Uint32Array(size);
    var center = this.window.center, width = Math.max(this.window.width, 1);
    var flip = this.monochrome1 !== this.invert;
    for (var v = 0; v < size; v++) {
      var value = v * p.scale + p.offset;
      // The linear VOI function of DICOM PS3.3 C.11.2.1.2, as the server's 8-bit rendering uses.
      var g = width > 1 ? ((value - (center - 0.5)) / (width - 1) + 0.5) : (value > center ? 1 : 0);
      g = Math.round(Math.min(Math.max(g, 0), 1) * 255);
      if (flip) { g = 255 - g; }
      lut[v] = 0xff000000 | (g << 16) | (g << 8) | g;
    }
    var out = new Uint32Array(this.imageData.data.buffer), values = p.values;
    for (var i = 0; i < values.length; i++) {
      out[i] = lut[values[i]];
    }
    this.context.putImageData(this.imageData, 0, 0);
    this.timings.renderMs = performance.now() - began;
    this.root.dataset.shownCenter = String(Math.round(center * 10) / 10);
    this.root.dataset.shownWidth = String(Math.round(width * 10) / 10);
    this.showReadout();
  };

  Viewport.prototype.scheduleRender = function () {
    var self = this;
    if (this.pending) {
      return;
    }
    this.pending = window.requestAnimationFrame(function () { self.pending = null; self.render(); });
  };

  Viewport.prototype.showReadout = function () {
    if (!this.readout || !this.ready) {
      return;
    }
    var zoom = this.item ? this.item.viewportToImageZoom(this.osd.viewport.getZoom(true)) : 1;
    var unit = this.isCt ? " HU" : "";
    this.readout.textContent = "W " + Math.round(this.window.width) + unit + " · L " + Math.round(this.window.center) + unit +
      (this.invert ? " · inverted" : "") + " · zoom " + Math.round(zoom * 100) + " %";
  };

  Viewport.prototype.setPreset = function (key) {
    if (!this.ready) {
      return;
    }
    var found = this.presets().filter(function (preset) { return preset.key === key; })[0];
    if (!found) {
      return;
    }
    this.preset = key;
    this.window = key === "default" ? this.defaultWindow() : key === "full" ? this.fullWindow()
      : { center: found.center, width: found.width };
    this.markPreset();
    this.render();
  };

  Viewport.prototype.markPreset = function () {
    var key = this.preset;
    this.root.querySelectorAll("[data-preset]").forEach(function (button) {
      button.setAttribute("aria-pressed", button.dataset.preset === key ? "true" : "false");
    });
  };

  Viewport.prototype.toggleInvert = function () {
    this.invert = !this.invert;
    var button = this.root.querySelector("[data-action=invert]");
    if (button) { button.setAttribute("aria-pressed", this.invert ? "true" : "false"); }
    this.render();
  };

  Viewport.prototype.fit = function () {
    if (this.opened) { this.osd.viewport.goHome(); }
  };

  Viewport.prototype.actualSize = function () {
    if (this.opened) {
      var ratio = window.devicePixelRatio || 1;
      this.osd.viewport.zoomTo(this.item.imageToViewportZoom(1 / ratio));
    }
  };

  Viewport.prototype.reset = function () {
    this.invert = false;
    var button = this.root.querySelector("[data-action=invert]");
    if (button) { button.setAttribute("aria-pressed", "false"); }
    this.setWindowMode(false);
    if (this.ready) {
      this.preset = "default";
      this.window = this.defaultWindow();
      this.markPreset();
      this.render();
    }
    this.fit();
  };

  Viewport.prototype.setWindowMode = function (on) {
    this.dragWindow = on;
    var button = this.root.querySelector("[data-action=window-mode]");
    if (button) { button.setAttribute("aria-pressed", on ? "true" : "false"); }
    this.area.classList.toggle("windowing", on);
  };

  // Left drag in window mode, right drag or shift+drag always: horizontal = width, vertical = level.
  Viewport.prototype.bindWindowDrag = function () {
    var self = this, drag = null;
    this.area.addEventListener("contextmenu", function (event) { event.preventDefault(); });
    this.area.addEventListener("pointerdown", function (event) {
      var wants = self.dragWindow || event.button === 2 || event.shiftKey;
      if (!wants || !self.ready || event.pointerType === "touch" && !self.dragWindow) {
        return;
      }
      event.preventDefault();
      event.stopPropagation(); // capture phase: OpenSeadragon does not pan
      var range = Math.max((self.pixels.max - self.pixels.min) * self.pixels.scale, 1);
      drag = { x: event.clientX, y: event.clientY, center: self.window.center, width: self.window.width,
        step: range / 400, id: event.pointerId };
      self.area.setPointerCapture(event.pointerId);
    }, true);
    this.area.addEventListener("pointermove", function (event) {
      if (!drag || event.pointerId !== drag.id) {
        return;
      }
      event.stopPropagation();
      self.window = {
        width: Math.max(1, drag.width + (event.clientX - drag.x) * drag.step),
        center: drag.center - (event.clientY - drag.y) * drag.step
      };
      self.preset = null;
      self.markPreset();
      self.scheduleRender();
    }, true);
    function end(event) {
      if (drag && event.pointerId === drag.id) {
        drag = null;
        event.stopPropagation();
      }
    }
    this.area.addEventListener("pointerup", end, true);
    this.area.addEventListener("pointercancel", end, true);
  };

  // The heatmap of the image's result block (the job block is swapped in by the polling).
  Viewport.prototype.syncHeatmap = function () {
    if (!this.opened) {
      return;
    }
    var card = this.root.closest(".image-card");
    var source = card && card.querySelector(".job-result .heatmap-overlay");
    var url = source ? source.getAttribute("src") : null;
    if (url === this.heatmapUrl) {
      return;
    }
    if (this.heatmap) {
      this.osd.removeOverlay(this.heatmap);
      this.heatmap = null;
    }
    this.heatmapUrl = url;
    if (!url) {
      return;
    }
    var img = document.createElement("img");
    img.className = "viewer-heatmap";
    img.alt = source.getAttribute("alt") || "Heatmap";
    img.src = url;
    img.draggable = false;
    this.heatmap = img;
    this.osd.addOverlay({ element: img, location: this.item.imageToViewportRectangle(0, 0, this.width, this.height) });
    var controls = card.querySelector(".heatmap-view");
    var toggle = controls && controls.querySelector(".heatmap-toggle");
    var range = controls && controls.querySelector(".heatmap-opacity");
    this.setHeatmap(toggle ? toggle.checked : true, range ? Number(range.value) / 100 : 0.5);
  };

  Viewport.prototype.setHeatmap = function (visible, opacity) {
    if (!this.heatmap) {
      return;
    }
    this.heatmap.style.opacity = String(opacity);
    // Visibility, not display: OpenSeadragon sets an overlay's display itself.
    this.heatmap.style.visibility = visible ? "visible" : "hidden";
    this.root.dataset.heatmap = visible ? "shown" : "hidden";
  };

  Viewport.prototype.destroy = function () {
    if (this.osd) { this.osd.destroy(); this.osd = null; }
  };

  function buildToolbar(viewport) {
    var bar = viewport.root.querySelector(".viewer-tools");
    if (!bar) {
      return;
    }
    viewport.presets().forEach(function (preset, index) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "tool";
      button.dataset.preset = preset.key;
      button.title = preset.label + " window (key " + (index + 1) + ")";
      button.textContent = preset.label;
      button.setAttribute("aria-pressed", preset.key === "default" ? "true" : "false");
      bar.querySelector(".viewer-presets").appendChild(button);
    });
    bar.addEventListener("click", function (event) {
      var button = event.target.closest("button");
      if (!button) {
        return;
      }
      if (button.dataset.preset) {
        viewport.setPreset(button.dataset.preset);
      }
      var action = button.dataset.action;
      if (action === "fit") { viewport.fit(); }
      if (action === "actual") { viewport.actualSize(); }
      if (action === "invert") { viewport.toggleInvert(); }
      if (action === "reset") { viewport.reset(); }
      if (action === "window-mode") { viewport.setWindowMode(!viewport.dragWindow); }
      if (action === "close-compare") { closeCompare(); }
    });
  }

  function makeViewport(root) {
    var viewport = new Viewport(root);
    root.viewport = viewport;
    buildToolbar(viewport);
    return viewport;
  }

  // The case page ------------------------------------------------------------------------------

  if (!OSD || !document.getElementById("case-live")) {
    return;
  }
  // A case without images has no reader: the keys (next case, sign-off, help) still work.
  var reader = document.querySelector(".reader") || document.createElement("div");
  var cards = Array.prototype.slice.call(reader.querySelectorAll(".image-card"));
  var active = 0;

  function viewportOf(card) {
    var root = card && card.querySelector(".viewer");
    if (!root) {
      return null;
    }
    return root.viewport || makeViewport(root);
  }

  function show(index) {
    if (!cards.length) {
      return;
    }
    active = (index + cards.length) % cards.length;
    cards.forEach(function (card, i) { card.hidden = i !== active; });
    reader.querySelectorAll(".thumb").forEach(function (thumb, i) {
      thumb.setAttribute("aria-current", i === active ? "true" : "false");
    });
    viewportOf(cards[active]);
    reader.dataset.activeImage = cards[active].dataset.position;
  }

  reader.addEventListener("click", function (event) {
    var thumb = event.target.closest(".thumb");
    if (thumb) {
      show(Number(thumb.dataset.index));
    }
  });

  // Heatmap controls of the result block steer the viewport's heatmap (case.js keeps wiring the
  // block's own controls; the old second copy of the image is hidden by the stylesheet).
  function heatmapControls(event) {
    var figure = event.target.closest && event.target.closest(".heatmap-view");
    var card = figure && figure.closest(".image-card");
    var viewport = card && card.querySelector(".viewer") && card.querySelector(".viewer").viewport;
    if (!viewport) {
      return;
    }
    var toggle = figure.querySelector(".heatmap-toggle"), range = figure.querySelector(".heatmap-opacity");
    viewport.setHeatmap(toggle ? toggle.checked : true, range ? Number(range.value) / 100 : 0.5);
  }
  document.addEventListener("input", heatmapControls);
  document.addEventListener("change", heatmapControls);

  // New result blocks arrive by polling: pick up their heatmap.
  new MutationObserver(function () {
    cards.forEach(function (card) {
      var root = card.querySelector(".viewer");
      if (root && root.viewport) { root.viewport.syncHeatmap(); }
    });
  }).observe(reader, { childList: true, subtree: true });

  // Priors beside the current image ---------------------------------------------------------
  var compare = document.querySelector(".compare-pane");

  function closeCompare() {
    if (!compare) {
      return;
    }
    var root = compare.querySelector(".viewer");
    if (root && root.viewport) { root.viewport.destroy(); root.viewport = null; }
    compare.hidden = true;
    reader.classList.remove("comparing");
    document.querySelectorAll(".open-prior[aria-pressed=true]").forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
  }

  function openPrior(button) {
    if (!compare) {
      return;
    }
    closeCompare();
    var root = compare.querySelector(".viewer");
    ["imageUrl", "pixelsUrl", "modality", "photometric", "windowCenter", "windowWidth"].forEach(function (key) {
      root.dataset[key] = button.dataset[key] || "";
    });
    delete root.dataset.ready;
    root.querySelector(".viewer-area").innerHTML = "";
    root.querySelector(".viewer-presets").innerHTML = "";
    compare.querySelector(".compare-title").textContent = button.dataset.title;
    compare.querySelector(".compare-finding").textContent = button.dataset.finding;
    compare.hidden = false;
    reader.classList.add("comparing");
    button.setAttribute("aria-pressed", "true");
    makeViewport(root);
    var current = viewportOf(cards[active]);
    if (current && current.osd) { window.setTimeout(function () { current.fit(); }, 50); }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest(".open-prior");
    if (button) {
      openPrior(button);
    }
  });

  // Keyboard -----------------------------------------------------------------------------------
  var help = document.getElementById("keyboard-help");

  function toggleHelp(force) {
    if (!help) {
      return;
    }
    help.hidden = force === undefined ? !help.hidden : !force;
    if (!help.hidden) { help.querySelector("button").focus(); }
  }
  if (help) {
    help.addEventListener("click", function (event) {
      if (event.target === help || event.target.closest("[data-action=close-help]")) { toggleHelp(false); }
    });
  }
  document.querySelectorAll("[data-action=show-help]").forEach(function (button) {
    button.addEventListener("click", function () { toggleHelp(true); });
  });

  function go(selector) {
    var link = document.querySelector(selector);
    if (link && link.href) {
      window.location.href = link.href;
    }
  }

  function focusSignoff() {
    var section = document.getElementById("report");
    if (!section) {
      return;
    }
    var field = section.querySelector("input[type=radio]:not([disabled]), textarea, select, button");
    section.scrollIntoView({ block: "start" });
    if (field) { field.focus(); }
  }

  // Capture phase: OpenSeadragon's canvas keeps key events it sees for itself.
  window.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) {
      if (event.key === "Escape") { target.blur(); }
      return; // typing a report, not steering the viewer
    }
    var viewport = viewportOf(cards[active]);
    var key = event.key, handled = true;
    if (key === "?") {
      toggleHelp();
    } else if (key === "Escape") {
      toggleHelp(false);
    } else if (key === "n") {
      go("a.next-case");
    } else if (key === "p") {
      go("a.previous-case");
    } else if (key === "ArrowRight" || key === "j") {
      show(active + 1);
    } else if (key === "ArrowLeft" || key === "k") {
      show(active - 1);
    } else if (key === "h") {
      var toggle = cards.length ? cards[active].querySelector(".heatmap-toggle") : null;
      if (toggle) { toggle.click(); }
    } else if (/^[1-9]$/.test(key) && viewport) {
      var preset = viewport.presets()[Number(key) - 1];
      if (preset) { viewport.setPreset(preset.key); }
    } else if (key === "i" && viewport) {
      viewport.toggleInvert();
    } else if ((key === "0" || key === "f") && viewport) {
      viewport.fit();
    } else if (key === "a" && viewport) {
      viewport.actualSize();
    } else if (key === "r" && viewport) {
      viewport.reset();
    } else if (key === "w" && viewport) {
      viewport.setWindowMode(!viewport.dragWindow);
    } else if (key === "s") {
      focusSignoff();
    } else {
      handled = false;
    }
    if (handled) {
      event.preventDefault();
    }
  }, true);

  window.xnetReader = { show: show, viewport: function () { return viewportOf(cards[active]); } };
  show(0);
})();
