//! File and line for a trapped guest's frames, read from the DWARF of a
//! plugin loaded with `[plugins.NAME] debug = true`. The host resolves them
//! itself, from each frame's offset in its core module, so only plugins
//! that ask pay (with memory for their debug info), never the engine.

use anyhow::{Context as _, Result};
use gimli::{EndianArcSlice, LittleEndian, SectionId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wasmparser::{Name, NameSectionReader, Parser, Payload};

type Reader = EndianArcSlice<LittleEndian>;

/// The debug info of a component's core modules that have any.
pub(crate) struct Symbols {
    modules: Vec<ModuleSymbols>,
}

struct ModuleSymbols {
    /// The module's own name (its name section), as wasmtime reports it.
    name: Option<String>,
    /// Where its code section starts in the component: DWARF addresses
    /// count from there.
    code_start: u64,
    /// addr2line's lazily parsed units are not `Sync`.
    context: Mutex<addr2line::Context<Reader>>,
}

impl Symbols {
    /// Reads the DWARF of every core module in `component`; `None` when
    /// none carries any (a plugin built without debug info).
    pub(crate) fn read(component: &[u8]) -> Result<Option<Symbols>> {
        let mut modules = Vec::new();
        for payload in Parser::new(0).parse_all(component) {
            if let Payload::ModuleSection {
                unchecked_range, ..
            } = payload?
            {
                let base = unchecked_range.start as u64;
                let bytes = component
                    .get(unchecked_range)
                    .context("a core module outside the component")?;
                if let Some(module) = ModuleSymbols::read(bytes, base)? {
                    modules.push(module);
                }
            }
        }
        Ok((!modules.is_empty()).then_some(Symbols { modules }))
    }

    /// `file:line` of the instruction at `offset` in the core module named
    /// `module`, where the debug info says.
    pub(crate) fn locate(&self, module: Option<&str>, offset: usize) -> Option<String> {
        let candidates: Vec<&ModuleSymbols> = match self.modules.as_slice() {
            [only] => vec![only],
            all => all.iter().filter(|m| m.name.as_deref() == module).collect(),
        };
        candidates.into_iter().find_map(|m| {
            let address = (offset as u64).checked_sub(m.code_start)?;
            let context = m.context.lock().unwrap_or_else(|p| p.into_inner());
            let location = context.find_location(address).ok()??;
            let file = location.file?;
            Some(match location.line {
                Some(line) => format!("{file}:{line}"),
                None => file.to_string(),
            })
        })
    }
}

impl ModuleSymbols {
    /// The debug info of a core module that starts at `base` in its
    /// component: wasmtime reports a frame's offset from the component's
    /// start.
    fn read(module: &[u8], base: u64) -> Result<Option<ModuleSymbols>> {
        let mut sections: HashMap<&str, &[u8]> = HashMap::new();
        let (mut name, mut code_start) = (None, None);
        for payload in Parser::new(base).parse_all(module) {
            match payload? {
                Payload::CodeSectionStart { range, .. } => code_start = Some(range.start as u64),
                Payload::CustomSection(reader) if reader.name() == "name" => {
                    let names = NameSectionReader::new(wasmparser::BinaryReader::new(
                        reader.data(),
                        reader.data_offset(),
                    ));
                    for entry in names.into_iter().flatten() {
                        if let Name::Module { name: n, .. } = entry {
                            name = Some(n.to_string());
                        }
                    }
                }
                Payload::CustomSection(reader) if reader.name().starts_with(".debug_") => {
                    sections.insert(reader.name(), reader.data());
                }
                _ => {}
            }
        }
        let Some(code_start) = code_start else {
            return Ok(None);
        };
        if !sections.contains_key(".debug_info") {
            return Ok(None);
        }
        let load = |id: SectionId| -> Result<Reader, gimli::Error> {
            let data = sections.get(id.name()).copied().unwrap_or(&[]);
            Ok(EndianArcSlice::new(Arc::from(data), LittleEndian))
        };
        let dwarf = gimli::Dwarf::load(load).context("cannot read the plugin's DWARF")?;
        let context =
            addr2line::Context::from_dwarf(dwarf).context("cannot index the plugin's DWARF")?;
        Ok(Some(ModuleSymbols {
            name,
            code_start,
            context: Mutex::new(context),
        }))
    }
}
