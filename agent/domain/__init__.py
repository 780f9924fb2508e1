"""Pure domain core: seat licensing rules (license) and billing figures (billing).

Standard library only, so the rules can be tested and reasoned about without a database,
a web framework or an IdP. The rules cite the vendor documents in /work/shared/seeds/.
"""
